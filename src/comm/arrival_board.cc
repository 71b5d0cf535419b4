#include "arrival_board.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <vector>

#include "core/process_state.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {
namespace {

std::string arrivedKey(int rank) { return "arrived/" + std::to_string(rank); }
std::string addressKey(int rank) { return "address/" + std::to_string(rank); }
std::string failedKey(int rank) { return "failed/" + std::to_string(rank); }

// How long a diagnosing rank waits for peers whose last publication is older than the collective: they
// may have entered it just now and not yet published.
constexpr std::chrono::milliseconds kStragglerGrace{3 * ArrivalBoard::kPublishInterval};
constexpr std::chrono::milliseconds kReadTimeout{1};
// What a diagnosis may spend on store calls in all: a store whose host is stopped answers nothing, and the
// error it explains should not wait a store operation's own timeout (a minute) on top of the collective's.
constexpr std::chrono::seconds kDiagnosisBudget{5};
// What one background publication may take: the board's destruction joins its publisher, so a store that
// stopped answering must not hold a failing rank's exit for a store operation's timeout.
constexpr std::chrono::seconds kPublishBudget{2};
// How the peers' addresses are read early: this many tries, this far apart, until every peer's is there.
constexpr int kAddressReads = 20;
constexpr int kAddressReadsMaxRanks = 64;
constexpr std::chrono::milliseconds kAddressReadPause{250};
// A peer's failure as published and as quoted: a message, not a log.
constexpr size_t kFailureTextLimit = 1000;
constexpr int kFailedPeersNamed = 3;

}  // namespace

ArrivalBoard::ArrivalBoard(dist::Store& store, int rank, int size)
    : store_(store), rank_(rank), size_(size), ringrun_(ringrunOfThisProcess()), addresses_(static_cast<size_t>(size)) {
  if (size_ > 1) {
    failure_listener_ = addFailureListener([this](const FailureRecord& failure) { publishFailure(failure); });
  }
  try {
    publisher_ = std::thread([this] { publishLoop(); });
  } catch (...) {
    stopListening();
    throw;
  }
}

ArrivalBoard::~ArrivalBoard() {
  stopListening();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  publisher_.join();
}

void ArrivalBoard::publishFailure(const FailureRecord& failure) {
  if (failure.isConsequence()) return;
  dist::StoreCallCap cap(kPublishBudget);
  store_.set(failedKey(rank_), dist::toBytes(failure.message.substr(0, kFailureTextLimit)));
}

void ArrivalBoard::stopListening() {
  if (const uint64_t id = failure_listener_.exchange(0); id != 0) removeFailureListener(id);
}

std::optional<std::string> ArrivalBoard::readIfSet(const std::string& key) {
  if (!store_.check({key})) return std::nullopt;
  return dist::toString(store_.get(key, kReadTimeout));
}

void ArrivalBoard::arrive(uint64_t sequence) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    entered_ = static_cast<int64_t>(sequence);
  }
  changed_.notify_one();
}

void ArrivalBoard::publish(uint64_t sequence) { store_.set(arrivedKey(rank_), dist::toBytes(std::to_string(sequence))); }

void ArrivalBoard::publishLoop() {
  try {
    dist::StoreCallCap cap(kPublishBudget);
    store_.set(addressKey(rank_), dist::toBytes(processAddress()));
  } catch (const std::exception& e) {
    debug("arrival board: publishing this rank's address failed: {}", e.what());
  }
  std::unique_lock<std::mutex> lock(mu_);
  // The peers' addresses are read early, while the store is surely up, for a diagnosis that may come when it
  // is not (its host stopped): a few tries, as peers start at their own pace. Not in large jobs, where every
  // rank reading every other's would load the store with ranks^2 calls at the start.
  int address_reads = size_ <= kAddressReadsMaxRanks ? 0 : kAddressReads;
  while (true) {
    while (!stop_ && entered_ <= published_ && address_reads < kAddressReads) {
      lock.unlock();
      const bool all = readPeerAddresses();
      lock.lock();
      address_reads = all ? kAddressReads : address_reads + 1;
      if (!all) changed_.wait_for(lock, kAddressReadPause, [&] { return stop_ || entered_ > published_; });
    }
    changed_.wait(lock, [&] { return stop_ || entered_ > published_; });
    if (stop_) return;
    const int64_t value = entered_;
    lock.unlock();
    try {
      dist::StoreCallCap cap(kPublishBudget);
      publish(static_cast<uint64_t>(value));
    } catch (const std::exception& e) {
      // The store is only needed for diagnosis; losing it must not break communication.
      debug("arrival board: publishing collective #{} failed: {}", value, e.what());
    }
    lock.lock();
    published_ = std::max(published_, value);
    // Rate limit: a timed wait that also ends early on stop.
    changed_.wait_for(lock, kPublishInterval, [&] { return stop_; });
    if (stop_) return;
  }
}

bool ArrivalBoard::readPeerAddresses() {
  bool all = true;
  try {
    dist::StoreCallCap cap(kPublishBudget);
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      {
        std::lock_guard<std::mutex> lock(addresses_mu_);
        if (!addresses_[static_cast<size_t>(r)].empty()) continue;
      }
      const std::optional<std::string> address = readIfSet(addressKey(r));
      all = all && address.has_value();
      if (!address) continue;
      std::lock_guard<std::mutex> lock(addresses_mu_);
      addresses_[static_cast<size_t>(r)] = *address;
    }
  } catch (const std::exception& e) {
    debug("arrival board: reading the peers' addresses failed: {}", e.what());
    return false;
  }
  return all;
}

std::string ArrivalBoard::describeMissing(uint64_t sequence) {
  dist::StoreCallCap cap(kDiagnosisBudget);
  try {
    publish(sequence);
    std::vector<int64_t> reached(size_, -1);
    auto readAll = [&] {
      for (int r = 0; r < size_; ++r) {
        if (reached[r] >= static_cast<int64_t>(sequence)) continue;
        if (const auto value = readIfSet(arrivedKey(r))) reached[r] = std::stoll(*value);
      }
    };
    readAll();
    bool all = true;
    for (int r = 0; r < size_; ++r) all = all && reached[r] >= static_cast<int64_t>(sequence);
    if (!all) {
      std::this_thread::sleep_for(kStragglerGrace);  // once, on the error path only
      readAll();
    }
    std::vector<int> missing;
    for (int r = 0; r < size_; ++r) {
      if (reached[r] < static_cast<int64_t>(sequence)) missing.push_back(r);
    }
    // What else explains the wait: neighbours stopped or gone, peers that failed.
    std::string details = describeStuckNeighbours();
    if (const std::string failed = describeFailedPeers(); !failed.empty()) {
      details += (details.empty() ? "" : "; ") + failed;
    }
    if (missing.empty()) {
      if (!details.empty()) return "every rank arrived, but " + details;
      return "every rank arrived (a peer died or stalled inside the backend, or the whole job was paused longer "
             "than the timeout)";
    }
    std::ostringstream out;
    out << (missing.size() == 1 ? "rank " : "ranks ");
    for (size_t i = 0; i < missing.size(); ++i) out << (i ? ", " : "") << missing[i];
    out << " did not arrive (";
    for (size_t i = 0; i < missing.size(); ++i) {
      const int r = missing[i];
      out << (i ? ", " : "") << "rank " << r;
      if (reached[r] < 0) {
        out << " never reached a collective";
      } else {
        out << " last seen at collective #" << reached[r];  // published every 50 ms at most: it may lag
      }
    }
    out << ")";
    if (!details.empty()) out << "; " << details;
    return out.str();
  } catch (const std::exception& e) {
    // The store did not answer within the diagnosis's budget, or failed: the one that hosts it is the suspect.
    // The addresses read early still tell which neighbours are stopped or gone.
    const std::string stuck = describeStuckNeighbours(/*known_only=*/true);
    const std::string ringrun = describeStuckRingrun(ringrun_);
    return std::string("could not tell which ranks are missing: the job's store failed (") + e.what() +
           "): whoever hosts it may be stopped or gone (rank 0 outside ringrun; under ringrun, node 0's ringrun)" +
           (ringrun.empty() ? "" : "; " + ringrun) + (stuck.empty() ? "" : "; " + stuck);
  }
}

std::string ArrivalBoard::describeFailedPeers() {
  dist::StoreCallCap cap(kDiagnosisBudget);
  std::ostringstream out;
  int named = 0;
  int more = 0;
  try {
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      const std::optional<std::string> message = readIfSet(failedKey(r));
      if (!message) continue;
      if (named == kFailedPeersNamed) {
        ++more;
        continue;
      }
      out << (named++ ? "; " : "") << "rank " << r << " failed: " << *message;
    }
  } catch (const std::exception& e) {  // the store is gone (its host failed): what was read so far is said
    debug("arrival board: cannot read the peers' failures: {}", e.what());
  }
  if (more > 0) out << "; and " << more << " other rank(s)";
  return out.str();
}

std::string ArrivalBoard::describeBrokenPeers(std::string_view said) {
  std::string failed = describeFailedPeers();
  bool already_said = false;
  std::string stuck = describeStuckNeighbours(/*known_only=*/false, said, &already_said);
  if (failed.empty() && stuck.empty() && !already_said) {
    // A process's sockets close as it begins to exit, a moment before its state says it has: once, on the
    // error path only.
    std::this_thread::sleep_for(kStragglerGrace);
    failed = describeFailedPeers();
    stuck = describeStuckNeighbours(/*known_only=*/false, said);
  }
  if (!stuck.empty()) failed += (failed.empty() ? "" : "; ") + stuck;
  return failed;
}

namespace {
// Whether `said` says process `pid` is gone: "(pid N)" and, before the clause ends (';'), "gone".
bool saysGone(std::string_view said, pid_t pid) {
  const std::string mark = "(pid " + std::to_string(pid) + ")";
  for (size_t at = said.find(mark); at != std::string_view::npos; at = said.find(mark, at + 1)) {
    const std::string_view clause = said.substr(at, said.find(';', at) - at);
    if (clause.find("gone") != std::string_view::npos) return true;
  }
  return false;
}
}  // namespace

std::string ArrivalBoard::describeStuckNeighbours(bool known_only, std::string_view said, bool* left_out) {
  const std::string mine = processAddress();
  const std::string machine = mine.substr(0, mine.find(' '));
  std::ostringstream out;
  int named = 0;
  std::vector<int> unaddressed;  // ranks whose address neither the early reads nor the store gave
  try {
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      std::string address;
      {
        std::lock_guard<std::mutex> lock(addresses_mu_);
        address = addresses_[static_cast<size_t>(r)];
      }
      if (address.empty() && !known_only) {
        if (std::optional<std::string> found = readIfSet(addressKey(r))) address = *found;
      }
      if (address.empty()) {
        unaddressed.push_back(r);
        continue;
      }
      const size_t space = address.find(' ');
      if (space == std::string::npos || address.compare(0, space, machine) != 0) continue;  // another machine
      const pid_t pid = static_cast<pid_t>(std::stol(address.substr(space + 1)));
      const std::string state = processState(pid);
      if (!isStuckState(state)) continue;
      if (state == "gone" && saysGone(said, pid)) {
        if (left_out != nullptr) *left_out = true;
        continue;
      }
      out << (named++ ? ", " : "") << "rank " << r << "'s process (pid " << pid << ", this machine) is " << state
          << (state == "in uninterruptible I/O" ? " (a hung file system or device?)" : "");
    }
  } catch (const std::exception& e) {  // a malformed address, the store: the diagnosis goes on without them
    debug("arrival board: cannot tell the neighbours' states: {}", e.what());
    return "";
  }
  const std::string siblings = describeStoppedRanks(ringrun_, unaddressed);
  if (!siblings.empty()) out << (named > 0 ? ", " : "") << siblings;
  return out.str();
}

}  // namespace ringtrain::comm
