#include "ringtrain/comm/job_group.h"

#include <chrono>
#include <algorithm>
#include <exception>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/connect_store.h"

namespace ringtrain::comm {
namespace {

std::chrono::milliseconds timeoutOf(const config::CommOptions& options) {
  return std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
}

using Clock = std::chrono::steady_clock;

const std::string kArrivedPrefix = "ringtrain/arrived/";
const std::string kSeenPrefix = "ringtrain/read-rank-0/";
const std::string kLeftPrefix = "ringtrain/left/";
// After this long, rank 0 says whom it still waits for at leave.
constexpr std::chrono::milliseconds kLeaveNotice{5000};

}  // namespace

JobGroup::JobGroup(const config::CommOptions& options, Device device)
    : JobGroup(options, dist::detectProcessInfo(dist::processEnvironment(), options), device) {}

JobGroup::JobGroup(const config::CommOptions& options, const dist::ProcessInfo& process, Device device)
    : options_(options), process_(process) {
  store_ = dist::connectStore(process_, timeoutOf(options_));
  meet();
  comm_ = makeCommunicator(options_, process_, *store_, device);
}

JobGroup::~JobGroup() {
  const bool unwinding = std::uncaught_exceptions() > 0;
  comm_.reset();
  if (!unwinding) leave();
}

// Every rank reaches the store, within comm.timeout_s, before the communicator starts: MPI_Init waits for
// every rank with no limit of its own, so a rank that never starts (or starts late) held the others forever;
// and ranks on different backends, or told different world sizes, would each wait in their own rendezvous
// for ranks that are not coming. Each rank says "<backend> <world size>"; every rank compares rank 0's with
// its own, and rank 0 compares everyone's, once every rank has read rank 0's: rank 0 hosts the store, and a
// rank 0 that refused first would otherwise take it away before the others could read why.
void JobGroup::meet() {
  const int world = process_.world_size;
  if (world <= 1) return;
  const auto deadline = Clock::now() + timeoutOf(options_);
  const auto key = [](int r) { return kArrivedPrefix + std::to_string(r); };
  store_->set(key(process_.rank), dist::toBytes(options_.backend + " " + std::to_string(world)));
  // Rank 0 hosts the store: a rank other than 0 that loses it here says so, as rank 0 gave up first.
  const auto storeWentAway = [&](const CommError& e) {
    if (process_.rank == 0 || process_.launcher == "ringrun") throw;
    RT_THROW(CommError, "rank 0 hosts the job's store, and it went away while rank ", process_.rank,
             " waited for the others to arrive (rank 0 may have stopped waiting for a rank that never came, "
             "and said so): ", e.what());
  };
  const auto waitFor = [&](const std::vector<int>& ranks) {
    std::vector<std::string> keys;
    for (int r : ranks) keys.push_back(key(r));
    std::vector<int> missing;
    try {
      try {
        store_->wait(keys, std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                        deadline - Clock::now())));
        return;
      } catch (const TimeoutError&) {
        for (int r : ranks) {
          if (!store_->check({key(r)})) missing.push_back(r);
        }
      }
    } catch (const TimeoutError&) {
      throw;
    } catch (const CommError& e) {
      storeWentAway(e);
    }
    RT_THROW(TimeoutError, "rank(s) ", fmt::format("{}", fmt::join(missing, ", ")), " of ", world,
             " did not reach the job's store within comm.timeout_s ", options_.timeout_s,
             " s: not started, or stuck before it");
  };
  const auto compare = [&](int r, const std::function<void()>& after_reading) {
    std::istringstream said(dist::toString(store_->get(key(r), timeoutOf(options_))));
    if (after_reading) after_reading();
    std::string backend;
    int their_world = 0;
    said >> backend >> their_world;
    if (backend != options_.backend) {
      RT_THROW(ConfigError, "rank ", process_.rank, " runs comm.backend ", options_.backend, " and rank ", r, " ",
               backend, ": every rank must use the same backend");
    }
    if (their_world != world) {
      RT_THROW(ConfigError, "rank ", process_.rank, " was started with a world size of ", world, " and rank ", r,
               " with ", their_world, ": every rank must be told the same WORLD_SIZE");
    }
  };
  waitFor({0});
  const auto seen = [](int r) { return kSeenPrefix + std::to_string(r); };
  if (process_.rank != 0) compare(0, [&] { store_->set(seen(process_.rank), dist::toBytes("1")); });
  std::vector<int> all(static_cast<size_t>(world));
  std::iota(all.begin(), all.end(), 0);
  waitFor(all);
  if (process_.rank == 0) {
    std::vector<std::string> read_mine;
    for (int r = 1; r < world; ++r) read_mine.push_back(seen(r));
    store_->wait(read_mine, std::max(std::chrono::milliseconds(1),
                                     std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())));
    for (int r = 1; r < world; ++r) compare(r, nullptr);
  }
}

// Rank 0 hosts the store (outside ringrun): it leaves once every rank has, and says whom it waits for when
// that takes long (a rank still writing its files, or one that died after its last collective).
void JobGroup::leave() noexcept {
  const int world = process_.world_size;
  if (world <= 1 || !store_ || process_.launcher == "ringrun") return;
  try {
    store_->set(kLeftPrefix + std::to_string(process_.rank), dist::toBytes("1"));
    if (process_.rank != 0) return;
    std::vector<std::string> keys;
    for (int r = 0; r < world; ++r) keys.push_back(kLeftPrefix + std::to_string(r));
    const auto deadline = Clock::now() + timeoutOf(options_);
    for (bool said = false;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      try {
        store_->wait(keys, std::clamp(left, std::chrono::milliseconds(1), kLeaveNotice));
        return;
      } catch (const TimeoutError&) {
        std::vector<int> missing;
        for (int r = 0; r < world; ++r) {
          if (!store_->check({keys[static_cast<size_t>(r)]})) missing.push_back(r);
        }
        if (Clock::now() >= deadline) {
          warn("leaving the job: rank(s) {} did not leave within comm.timeout_s {} s; rank 0 stops hosting the "
               "store", fmt::join(missing, ", "), options_.timeout_s);
          return;
        }
        if (!said) {
          info("leaving the job: rank 0 hosts the store and waits up to comm.timeout_s {} s for rank(s) {} to leave",
               options_.timeout_s, fmt::join(missing, ", "));
          said = true;
        }
      }
    }
  } catch (const std::exception& e) {
    warn("leaving the job: {} (rank {} of {} stops without waiting for the others)", e.what(), process_.rank, world);
  }
}

}  // namespace ringtrain::comm
