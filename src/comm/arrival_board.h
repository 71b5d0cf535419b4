// Who reached which collective: the store-backed record that turns a hang into a diagnosis.
//
// Each rank publishes "arrived/<rank>" = the sequence number of the last collective it entered. Publishing
// is off the critical path: a background thread writes the newest value, at most once per kPublishInterval,
// so a stream of small collectives costs at most a few store writes per second. Nobody reads the keys
// until a collective times out; then the timed-out rank reads every rank's value and names those that have
// not reached its sequence number (or never reached any collective). A rank that is stopped (SIGSTOP),
// dead, or busy elsewhere never publishes the sequence number and so is named. Each rank also publishes
// "address/<rank>" (processAddress()), so that the ranks of one machine can tell each other's state, and,
// once, "failed/<rank>": the first failure this process records (core/failure_report.h) while the board
// lives, so that a peer whose collective then breaks can say which rank failed first, and why.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

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
  // returns e.g. "ranks 2, 3 did not arrive (rank 2 last reached collective #6, rank 3 never reached a
  // collective)" or "every rank arrived". Ranks on this machine whose process is stopped (SIGSTOP, a
  // debugger) or gone are named as well: a rank stopped inside the collective has arrived, and only its
  // state says why it does not go on. Never throws (a dead store is reported in the text), and spends at
  // most a few seconds on store calls (dist::StoreCallCap).
  std::string describeMissing(uint64_t sequence);

  // For a collective that failed: "rank 2 failed: <its message>" for every other rank that recorded a
  // failure, or "" (none did, or the store did not answer). Never throws.
  std::string describeFailedPeers();

 private:
  void publishLoop();
  void publish(uint64_t sequence);
  // "rank 1's process (pid 42, this machine) is stopped, ..." for the stuck ranks on this machine, or "".
  std::string describeStuckNeighbours();

  dist::Store& store_;
  const int rank_;
  const int size_;

  uint64_t failure_listener_ = 0;  // publishes this process's recorded failure (failed/<rank>)
  std::atomic<bool> failure_published_{false};

  std::mutex mu_;
  std::condition_variable changed_;
  int64_t entered_ = -1;    // guarded by mu_: newest sequence entered
  int64_t published_ = -1;  // guarded by mu_: newest sequence written to the store
  bool stop_ = false;       // guarded by mu_
  std::thread publisher_;
};

}  // namespace ringtrain::comm
