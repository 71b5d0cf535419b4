#include "ringtrain/comm/job_group.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <mutex>
#include <random>

#include <unistd.h>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/process_state.h"
#include "core/settings_difference.h"
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
const std::string kMetKey = "ringtrain/met";  // rank 0 has checked every rank's line
const std::string kLeftPrefix = "ringtrain/left/";          // set once its communicator is closed
const std::string kFinishedPrefix = "ringtrain/finished/";  // finish(): done with the job's work
const std::string kStoreGoneKey = "ringtrain/never-set";  // waited on until the store goes away
// After this long, rank 0 says whom it still waits for at leave.
constexpr std::chrono::milliseconds kLeaveNotice{5000};
// Rank 0 compares the ranks that arrived this often while it waits for the others.
constexpr std::chrono::milliseconds kArrivalSlice{1000};
// How long rank 0 gives a rank it is about to refuse to read rank 0's line first.
constexpr std::chrono::milliseconds kSeenWait{5000};

// What tells this process's arrival from another's with the same rank. The same for the whole process: a
// group it makes again after a failed meeting finds its own line, not another process's.
const std::string& nonce() {
  static const std::string value = [] {
    std::random_device device;
    return fmt::format("{}-{:08x}", ::getpid(), device());
  }();
  return value;
}

// Per store address and rank: ranks run as threads of one process (tests) keep apart.
std::string storeAndRank(const dist::ProcessInfo& process) {
  return fmt::format("{}:{} rank {}", process.master_addr, process.master_port, process.rank);
}

// Under ringrun one store serves every group of the job: every rank makes its groups in the same order, so
// the n-th is the same group everywhere, and its keys are its own (an earlier group's cannot meet it).
// Outside ringrun each group has a store of its own (rank 0 hosts a new one), and a count kept in each
// process could drift apart (a rank that started late, or retried), so there it is always 1.
int generationOf(const dist::ProcessInfo& process) {
  if (process.launcher != "ringrun") return 1;
  static std::mutex mu;
  static std::map<std::string, int> made;
  std::lock_guard<std::mutex> lock(mu);
  return ++made[storeAndRank(process)];
}

// Outside ringrun, a rank other than 0 keeps its connection to a group's store after leaving (parked here),
// and the next group it makes on that address first waits for the connection to break: rank 0 stopped
// hosting that store. Without this, the next group could reach the old store (rank 0 still leaving) and
// lose it under it. Parked stores are never freed at exit: deliberately leaked.
std::mutex g_parked_mu;
auto* g_parked = new std::map<std::string, std::unique_ptr<dist::Store>>();

void parkStore(const dist::ProcessInfo& process, std::unique_ptr<dist::Store> store) {
  std::lock_guard<std::mutex> lock(g_parked_mu);
  (*g_parked)[storeAndRank(process)] = std::move(store);
}

void waitForTheLastStoreToGo(const dist::ProcessInfo& process, std::chrono::milliseconds timeout) {
  std::unique_ptr<dist::Store> last;
  {
    std::lock_guard<std::mutex> lock(g_parked_mu);
    const auto it = g_parked->find(storeAndRank(process));
    if (it == g_parked->end()) return;
    last = std::move(it->second);
    g_parked->erase(it);
  }
  try {
    last->wait({kStoreGoneKey}, timeout);
  } catch (const TimeoutError&) {  // going on would meet the last group's keys there, and lose that store
    RT_THROW(TimeoutError, "rank ", process.rank, " cannot join a new group: rank 0 still hosts the last group's "
             "store after comm.timeout_s");
  } catch (const CommError&) {  // gone: what this waits for
  }
}

// Under ringrun the store is node 0's ringrun's: where it does not answer (a CommError; a TimeoutError names
// the ranks it waited for), this machine's ringrun being stopped may be why, and is said. Returns otherwise.
void throwSayingAStuckRingrun(const CommError& e, const dist::ProcessInfo& process) {
  if (process.launcher != "ringrun" || dynamic_cast<const TimeoutError*>(&e) != nullptr) return;
  if (const std::string ringrun = describeStuckRingrun(ringrunOfThisProcess()); !ringrun.empty()) {
    RT_THROW(CommError, e.what(), "; ", ringrun);
  }
}

}  // namespace

JobGroup::JobGroup(const config::CommOptions& options, Device device)
    : JobGroup(options, dist::detectProcessInfo(dist::processEnvironment(), options), device) {}

JobGroup::JobGroup(const config::CommOptions& options, const dist::ProcessInfo& process, Device device)
    : options_(options), process_(process) {
  const std::string backend = resolveBackend(options_, device);  // a bad one is said before anyone waits for it
  if (process_.launcher != "ringrun" && process_.rank != 0) waitForTheLastStoreToGo(process_, timeoutOf(options_));
  try {
    job_store_ = dist::connectStore(process_, timeoutOf(options_));
  } catch (const CommError& e) {
    throwSayingAStuckRingrun(e, process_);
    if (process_.rank == 0 || process_.launcher == "ringrun" || dynamic_cast<const TimeoutError*>(&e) != nullptr) {
      throw;
    }
    // The store answered and refused this process (another job's token): that is the cause, not a missing rank 0.
    if (std::string_view(e.what()).find("refused this client") != std::string_view::npos) {
      RT_THROW(CommError, "rank ", process_.rank, " cannot join the job: ", e.what());
    }
    RT_THROW(CommError, "rank ", process_.rank, " cannot reach the job's store at ", process_.master_addr, ":",
             process_.master_port, ", which rank 0 hosts: rank 0 did not start (or failed before it could), or the "
             "ranks were given different MASTER_ADDR/MASTER_PORT: ", e.what());
  }
  // Counted once the store is reached: a connection that failed and is tried again takes no generation.
  store_ = std::make_unique<dist::PrefixStore>("g" + std::to_string(generationOf(process_)), *job_store_);
  try {
    meet(backend);
  } catch (const CommError& e) {
    throwSayingAStuckRingrun(e, process_);
    throw;
  }
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
// for ranks that are not coming.
//   Each rank takes its key with "<backend> <world size> <ring settings> <nonce>" (the backend resolved for
//   its device: auto and gloo agree on a CPU; a key already taken is a second process with that rank). A
//   rank other than 0 reads rank 0's, says it has read it, compares, waits for everyone, then for rank 0 to
//   say that it has checked them all.
//   Rank 0 compares each rank as it arrives (waiting a second at a time), so a rank told another world size
//   is refused at once, not after the timeout for ranks that may never come; before refusing one, it waits
//   until that rank has read rank 0's line: rank 0 hosts the store, and refusing first it would take the
//   store away before the other could read why.
void JobGroup::meet(const std::string& backend) {
  const int world = process_.world_size;
  if (world <= 1) return;
  const int me = process_.rank;
  const auto deadline = Clock::now() + timeoutOf(options_);
  const auto remaining = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  };
  const auto arrived = [](int r) { return kArrivedPrefix + std::to_string(r); };
  const auto seen = [](int r) { return kSeenPrefix + std::to_string(r); };
  // What every rank's communicator must share beside the backend: the ring's settings shape its messages.
  // "key=value" items, '/' between them: no blanks, since the line the ranks exchange is read back at blanks.
  const std::string settings =
      fmt::format("comm.allreduce_algorithm={}/comm.ring_segment_kb={}/comm.ring_inflight={}/comm.ring_direct_kb={}/"
                  "comm.check_collectives={}/comm.same_host_copy={}",
                  options_.allreduce_algorithm, options_.ring_segment_kb, options_.ring_inflight,
                  options_.ring_direct_kb, options_.check_collectives, options_.same_host_copy);
  const auto notArrived = [&](const std::vector<int>& missing) {
    // Under ringrun a missing rank stopped on this machine, or ringrun itself stopped (node 0's hosts the
    // store, so nobody's key could come), is said by its process.
    const RingrunOfProcess ringrun = ringrunOfThisProcess();
    std::string why = describeStuckRingrun(ringrun);
    const std::string stopped = describeStoppedRanks(ringrun, missing);
    if (!stopped.empty()) why += (why.empty() ? "" : "; ") + stopped;
    RT_THROW(TimeoutError, "rank(s) ", fmt::format("{}", fmt::join(missing, ", ")), " of ", world,
             " did not reach the job's store within comm.timeout_s ", options_.timeout_s,
             " s: not started, or stuck before it", why.empty() ? "" : "; " + why);
  };
  struct Line {
    std::string backend;
    int world = 0;
    std::string settings;
    bool operator!=(const Line& o) const { return backend != o.backend || world != o.world || settings != o.settings; }
  };
  const auto parse = [](const std::string& said) {
    std::istringstream in(said);
    Line line;
    in >> line.backend >> line.world >> line.settings;
    return line;
  };
  const Line mine{backend, world, settings};
  const auto refuseIfDifferent = [&](int r, const std::string& said) {
    const Line theirs = parse(said);
    if (theirs.backend != backend) {
      RT_THROW(ConfigError, "rank ", me, " runs comm.backend ", backend, " and rank ", r, " ", theirs.backend,
               ": every rank must use the same backend");
    }
    if (theirs.world != world) {
      RT_THROW(ConfigError, "rank ", me, " was started with a world size of ", world, " and rank ", r, " with ",
               theirs.world, ": every rank must be told the same WORLD_SIZE");
    }
    if (theirs.settings != settings) {
      std::string differ = detail::settingsDifference(settings, me, theirs.settings, r, '/');
      if (differ.empty()) differ = "rank " + std::to_string(r) + " says '" + theirs.settings + "'";  // another version
      RT_THROW(ConfigError, differ, ": every rank must use the same comm settings");
    }
  };
  try {
    // Taken, not overwritten: a second process given the same rank (a copied launch line) is refused.
    const std::string line = fmt::format("{} {} {} {}", backend, world, settings, nonce());
    const std::string taken = dist::toString(store_->compareSet(arrived(me), {}, dist::toBytes(line)));
    if (taken != line) {
      RT_THROW(ConfigError, "rank ", me, " of this job was already taken by another process: two processes were "
               "given RANK ", me, " (or the job's previous run with this store is still going)");
    }
    if (me != 0) {
      std::string rank0;
      try {
        rank0 = dist::toString(store_->get(arrived(0), remaining()));
      } catch (const TimeoutError&) {
        notArrived({0});
      }
      store_->set(seen(me), dist::toBytes("1"));
      refuseIfDifferent(0, rank0);
    }
    std::vector<bool> checked(static_cast<size_t>(world), false);
    checked[static_cast<size_t>(me)] = true;
    if (me != 0) checked[0] = true;
    for (;;) {
      std::vector<int> missing;
      for (int r = 0; r < world; ++r) {
        if (checked[static_cast<size_t>(r)]) continue;
        if (!store_->check({arrived(r)})) {
          missing.push_back(r);
          continue;
        }
        if (me == 0) {
          const std::string said = dist::toString(store_->get(arrived(r), remaining()));
          if (parse(said) != mine) {
            try {  // it has read rank 0's line (or soon will): then it can say why, too
              store_->wait({seen(r)}, std::min(remaining(), kSeenWait));
            } catch (const TimeoutError&) {
            }
            refuseIfDifferent(r, said);
          }
        }
        checked[static_cast<size_t>(r)] = true;
      }
      if (missing.empty()) break;
      if (Clock::now() >= deadline) notArrived(missing);
      std::vector<std::string> keys;
      for (int r : missing) keys.push_back(arrived(r));
      try {
        store_->wait(keys, std::min(remaining(), me == 0 ? kArrivalSlice : remaining()));
      } catch (const TimeoutError&) {
      }
    }
    // The others go on only once rank 0 has checked every line: one it refuses (it then stops, and with it
    // the store) must not leave them inside the backend's rendezvous, failing there without the reason.
    if (me == 0) {
      store_->set(kMetKey, dist::toBytes("1"));
    } else {
      try {
        // Every rank is here, rank 0 included: give it the time its last checks take even when this rank's
        // own deadline (it came early) is nearly over.
        store_->wait({kMetKey}, std::max(remaining(), kSeenWait + kArrivalSlice + std::chrono::seconds(5)));
      } catch (const TimeoutError&) {
        RT_THROW(TimeoutError, "rank 0 did not confirm within comm.timeout_s ", options_.timeout_s,
                 " s that every rank's settings match (it is stuck, or still waits for a rank)");
      }
    }
  } catch (const TimeoutError&) {
    throw;
  } catch (const ConfigError&) {
    throw;
  } catch (const CommError& e) {
    if (me == 0 || process_.launcher == "ringrun") throw;
    RT_THROW(CommError, "rank 0 hosts the job's store, and it went away while rank ", me,
             " waited for the others to arrive: rank 0 stopped, and its own error says why (a rank that never "
             "came, or one it refused): ", e.what());
  }
}

void JobGroup::finish() {
  if (process_.world_size <= 1 || !store_) return;
  store_->set(kFinishedPrefix + std::to_string(process_.rank), dist::toBytes("1"));
  if (process_.rank != 0) return;
  const std::vector<int> missing = awaitAll(kFinishedPrefix, "finish");
  if (!missing.empty()) {
    RT_THROW(TimeoutError, "the end of the job: rank(s) ", fmt::format("{}", fmt::join(missing, ", ")),
             " did not finish within comm.timeout_s ", options_.timeout_s, " s of rank 0 (stopped or hung after "
             "their last collective?); what rank 0 writes is written, and the job is stopped");
  }
}

// Rank 0: waits until every rank has set its key under `prefix`, at most comm.timeout_s, saying whom it waits
// for after 5 s (a rank still writing its files, or one that died or stopped after its last collective).
// The ranks that did not set it.
std::vector<int> JobGroup::awaitAll(const std::string& prefix, const char* what) {
  const int world = process_.world_size;
  std::vector<std::string> keys;
  for (int r = 0; r < world; ++r) keys.push_back(prefix + std::to_string(r));
  const auto deadline = Clock::now() + timeoutOf(options_);
  for (bool said = false;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    try {
      store_->wait(keys, std::clamp(left, std::chrono::milliseconds(1), kLeaveNotice));
      return {};
    } catch (const TimeoutError&) {
      std::vector<int> missing;
      for (int r = 0; r < world; ++r) {
        if (!store_->check({keys[static_cast<size_t>(r)]})) missing.push_back(r);
      }
      if (missing.empty()) return {};
      if (Clock::now() >= deadline) return missing;
      if (!said) {
        info("the end of the job: rank 0 waits up to comm.timeout_s {} s for rank(s) {} to {}", options_.timeout_s,
             fmt::join(missing, ", "), what);
        said = true;
      }
    }
  }
}

// Rank 0 hosts the store (outside ringrun): it leaves once every rank has (see awaitAll), so that it does
// not take the store away from a rank still leaving.
void JobGroup::leave() noexcept {
  const int world = process_.world_size;
  if (world <= 1 || !store_ || process_.launcher == "ringrun") return;
  try {
    store_->set(kLeftPrefix + std::to_string(process_.rank), dist::toBytes("1"));
    if (process_.rank != 0) {
      parkStore(process_, std::move(job_store_));  // the next group waits for it to go (see parkStore)
      return;
    }
    if (const std::vector<int> missing = awaitAll(kLeftPrefix, "leave"); !missing.empty()) {
      warn("leaving the job: rank(s) {} did not leave within comm.timeout_s {} s; rank 0 stops hosting the "
           "store", fmt::join(missing, ", "), options_.timeout_s);
    }
  } catch (const std::exception& e) {
    warn("leaving the job: {} (rank {} of {} stops without waiting for the others)", e.what(), process_.rank, world);
  }
}

}  // namespace ringtrain::comm
