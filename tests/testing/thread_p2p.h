// A test double for Communicator: ranks are threads of one process and point-to-point messages go through
// mailboxes keyed by (source, destination, tag), matched in order like MPI. Sends either copy eagerly and
// complete at once, or (rendezvous mode, like MPI's large messages) complete only when a receive has taken
// the bytes straight from the sender's buffer, so a caller that overwrites a buffer still being sent, or
// that waits in an order that can deadlock, is caught. wait() times out with TimeoutError.
// Collectives: allreduce is ringAllreduce over these point-to-point operations and barrier is a one-element
// allreduce; the others are not needed by the tests that use this double and throw.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/comm/ring_allreduce.h"

namespace ringtrain::testing {

class ThreadWorld;

class ThreadP2P : public comm::Communicator {
 public:
  ThreadP2P(ThreadWorld& world, int rank) : world_(world), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override;
  std::string backendName() const override { return "thread-p2p"; }
  std::chrono::milliseconds timeout() const override;
  uint64_t nextSequence() const override { return sequence_; }

  comm::WorkPtr allreduceAsync(comm::Buffer buffer, comm::ReduceOp op) override;
  comm::WorkPtr broadcastAsync(comm::Buffer buffer, int root) override;
  comm::WorkPtr allgatherAsync(comm::Buffer send, comm::Buffer recv) override;
  std::vector<std::vector<uint8_t>> allgatherBytes(const std::vector<uint8_t>& mine) override;
  std::vector<std::vector<uint8_t>> allToAllBytes(const std::vector<std::vector<uint8_t>>& send) override;
  void barrier() override;
  comm::WorkPtr sendAsync(const void* data, size_t bytes, int peer, uint32_t tag) override;
  comm::WorkPtr recvAsync(void* data, size_t bytes, int peer, uint32_t tag) override;

  // Ranks share one address space, so a peer's memory is read with memcpy (ThreadWorld::peer_memory).
  bool canReadPeerMemory() const override;
  void readPeerMemory(int peer, const void* remote, void* local, size_t bytes) override;
  void postPeerNotice(int peer, comm::PeerNotice notice, std::chrono::milliseconds timeout) override;
  comm::PeerNotice takePeerNotice(int peer, std::chrono::milliseconds timeout) override;

  comm::RingOptions ring_options;  // what allreduceAsync passes to ringAllreduce

 private:
  ThreadWorld& world_;  // outlives every communicator it hands out
  int rank_;
  uint64_t sequence_ = 0;  // collectives issued so far
};

class ThreadWorld {
 public:
  explicit ThreadWorld(int size, std::chrono::milliseconds timeout = std::chrono::seconds(20),
                       bool rendezvous = false);

  int size() const { return size_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // What every rank's canReadPeerMemory() answers (set before run()), and how many peer reads were made.
  bool peer_memory = false;
  std::atomic<int64_t> peer_reads{0};

  // Runs body(comm) on one thread per rank and joins them all; rethrows the first exception (lowest rank).
  void run(const std::function<void(ThreadP2P&)>& body);

  // Bookkeeping of one posted receive; shared by its Work and the mailbox until a message fills it.
  struct RecvState {
    void* data;
    size_t bytes;
    bool done = false;      // guarded by ThreadWorld::mu_
    std::string error;      // guarded by ThreadWorld::mu_
  };
  // One message not yet received: eager ones own a copy, rendezvous ones point into the sender's buffer.
  struct SendState {
    const void* data;
    size_t bytes;
    std::vector<uint8_t> copy;
    bool done = false;  // guarded by ThreadWorld::mu_
  };

 private:
  friend class ThreadP2P;
  friend class RecvWork;
  friend class SendWork;
  using Key = std::tuple<int, int, uint32_t>;  // (source, destination, tag)
  struct Mailbox {
    std::deque<std::shared_ptr<SendState>> unexpected;    // sent before a receive was posted
    std::deque<std::shared_ptr<RecvState>> pending;       // posted before their message arrived
  };

  std::shared_ptr<SendState> send(const void* data, size_t bytes, int src, int dst, uint32_t tag);
  // Copies a message into a receive and marks both done; caller holds mu_.
  void deliver(SendState& send, RecvState& recv, int src, int dst, uint32_t tag);
  std::shared_ptr<RecvState> postRecv(void* data, size_t bytes, int src, int dst, uint32_t tag);

  const int size_;
  const std::chrono::milliseconds timeout_;
  const bool rendezvous_;
  std::mutex mu_;
  std::condition_variable arrived_;      // notified whenever a RecvState or SendState becomes done
  std::map<Key, Mailbox> mailboxes_;     // guarded by mu_
  std::map<std::pair<int, int>, std::deque<comm::PeerNotice>> notices_;  // (source, destination); mu_
};

}  // namespace ringtrain::testing
