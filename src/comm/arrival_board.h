// Who reached which collective: the store-backed record that turns a hang into a diagnosis.
//
// Each rank publishes "arrived/<rank>" = the sequence number of the last collective it entered. Publishing
// is off the critical path: a background thread writes the newest value, at most once per kPublishInterval,
// so a stream of small collectives costs at most a few store writes per second. Nobody reads the keys
// until a collective times out; then the timed-out rank reads every rank's value and names those that have
// not reached its sequence number (or never reached any collective). A rank that is stopped (SIGSTOP),
// dead, or busy elsewhere never publishes the sequence number and so is named. Each rank also publishes
// "address/<rank>" (processAddress()), so that the ranks of one machine can tell each other's state (under
// ringrun a stopped rank whose address never came is found by the environment ringrun gave it), and
// "failed/<rank>": the process's first recorded failure (core/failure_report.h), unless it is a
// consequence of another's, so that a peer whose collective then breaks can say which rank failed, and why.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/process_state.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::comm {

class ArrivalBoard {
 public:
  static constexpr std::chrono::milliseconds kPublishInterval{50};

  // `store` (already prefixed for this communicator) must outlive the board.
  ArrivalBoard(dist::Store& store, int rank, int size);
  ~ArrivalBoard();
  ArrivalBoard(const ArrivalBoard&) = delete;
  ArrivalBoard& operator=(const ArrivalBoard&) = delete;

  // Records that this rank entered collective `sequence`; returns at once.
  void arrive(uint64_t sequence);

  // For a collective that timed out: publishes this rank's arrival synchronously, reads the others' and
  // returns e.g. "ranks 2, 3 did not arrive (rank 2 last seen at collective #6, rank 3 never reached a
  // collective)" or "every rank arrived". Ranks on this machine whose process is stopped (SIGSTOP, a
  // debugger) or gone are named as well: a rank stopped inside the collective has arrived, and only its
  // state says why it does not go on. Never throws (a dead store is reported in the text), and spends at
  // most a few seconds on store calls (dist::StoreCallCap).
  std::string describeMissing(uint64_t sequence);

  // For a collective that failed: "rank 2 failed: <its message>" for the other ranks that recorded a failure
  // (three at most, then how many more), or "" (none did, or the store did not answer). Never throws.
  std::string describeFailedPeers();
  // For a broken connection: describeFailedPeers(), and the ranks on this machine whose process is stopped
  // or gone (a rank killed outright records no failure, and its peers see only a reset connection); when
  // neither says anything, asked again once after a short grace. A process that `said` (the failure's own
  // words) already says is gone ("(pid 42) is gone", "(pid 42) failed: ... (the process is gone)") is not
  // named again, nor waited for. Never throws.
  std::string describeBrokenPeers(std::string_view said = {});

  // What the board's failure listener does with the process's first recorded failure: publishes it for the
  // peers, cut to 1000 characters, in at most 2 s; a consequence (a broken connection, "rank 0 says why")
  // is not published, or the peers' messages would quote each other's, each longer than the last. Throws
  // what the store throws.
  void publishFailure(const FailureRecord& failure);

  // No longer publishes this process's failure: the communicator is gone, and the store with it may be.
  // Idempotent; the destructor calls it too.
  void stopListening();

 private:
  void publishLoop();
  void publish(uint64_t sequence);
  std::optional<std::string> readIfSet(const std::string& key);
  // "rank 1's process (pid 42, this machine) is stopped, ..." for the stuck ranks on this machine, or "".
  // `known_only`: from the addresses read early only, without the store. Never throws ("" then).
  // `said`: see describeBrokenPeers; `left_out`, when given, is set when a process was left out for it.
  std::string describeStuckNeighbours(bool known_only = false, std::string_view said = {}, bool* left_out = nullptr);
  // Reads the peers' addresses not yet known; true once every peer's is known.
  bool readPeerAddresses();

  dist::Store& store_;
  const int rank_;
  const int size_;
  // Under ringrun, what it gave this process, read once: a rank stopped on this machine is found by it when
  // its address never came (the store's host was stopped first), and a stopped ringrun is said.
  const RingrunOfProcess ringrun_;

  std::atomic<uint64_t> failure_listener_{0};  // publishes this process's recorded failure (failed/<rank>)

  std::mutex addresses_mu_;
  std::vector<std::string> addresses_;  // guarded by addresses_mu_: each peer's, "" until read

  std::mutex mu_;
  std::condition_variable changed_;
  int64_t entered_ = -1;    // guarded by mu_: newest sequence entered
  int64_t published_ = -1;  // guarded by mu_: newest sequence written to the store
  bool stop_ = false;       // guarded by mu_
  std::thread publisher_;
};

}  // namespace ringtrain::comm
