#include "ringtrain/comm/job_group.h"

#include <chrono>
#include <exception>
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

const std::string kArrivedPrefix = "ringtrain/arrived/";
const std::string kLeftCounter = "ringtrain/left";
const std::string kAllLeft = "ringtrain/all-left";

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
// and ranks on different backends would each wait in their own rendezvous.
void JobGroup::meet() {
  const int world = process_.world_size;
  if (world <= 1) return;
  const auto timeout = timeoutOf(options_);
  store_->set(kArrivedPrefix + std::to_string(process_.rank), dist::toBytes(options_.backend));
  std::vector<std::string> keys;
  for (int r = 0; r < world; ++r) keys.push_back(kArrivedPrefix + std::to_string(r));
  try {
    store_->wait(keys, timeout);
  } catch (const TimeoutError&) {
    std::vector<int> missing;
    for (int r = 0; r < world; ++r) {
      if (!store_->check({keys[static_cast<size_t>(r)]})) missing.push_back(r);
    }
    RT_THROW(TimeoutError, "rank(s) ", fmt::format("{}", fmt::join(missing, ", ")), " of ", world,
             " did not reach the job's store within comm.timeout_s ", options_.timeout_s,
             " s: not started, or stuck before it");
  }
  const std::string first = dist::toString(store_->get(keys[0], timeout));
  if (first != options_.backend) {
    RT_THROW(ConfigError, "rank ", process_.rank, " runs comm.backend ", options_.backend, " and rank 0 ", first,
             ": every rank must use the same backend");
  }
}

void JobGroup::leave() noexcept {
  // Under ringrun the store is the launcher's, and it outlives every rank: nothing to wait for.
  if (process_.world_size <= 1 || !store_ || process_.launcher == "ringrun") return;
  try {
    if (store_->add(kLeftCounter, 1) == process_.world_size) store_->set(kAllLeft, dist::toBytes("1"));
    if (process_.rank == 0) store_->wait({kAllLeft}, timeoutOf(options_));
  } catch (const std::exception& e) {
    warn("leaving the job: {} (rank {} of {} stops without waiting for the others)", e.what(), process_.rank,
         process_.world_size);
  }
}

}  // namespace ringtrain::comm
