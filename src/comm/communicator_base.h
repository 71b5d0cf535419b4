// What every backend shares: the communication thread, Work handles, sequence numbers, the collective
// agreement check and hang diagnosis. A backend implements the run* hooks (blocking calls made on the
// communication thread, in issue order) and point-to-point; everything else is here.
//
// Life of a collective: the caller's *Async numbers it (sequence), describes it (op, dtype, count, root)
// and queues it; the communication thread marks its arrival on the ArrivalBoard, then (with
// check_collectives) exchanges the 24-byte descriptor with every rank through the backend and compares,
// then runs it. Whatever it throws lands in the Work. A wait that times out, or a backend timeout on the
// thread, asks the ArrivalBoard which ranks are missing and raises TimeoutError; from then on the
// communicator is broken and fails every call with the first error.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "arrival_board.h"
#include "peer_memory.h"
#include "spin_wait.h"
#include "ringtrain/comm/communicator.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/config/config.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::comm {

enum class OpKind : uint8_t {
  kAllreduce = 1,
  kBroadcast,
  kAllgather,
  kAllgatherBytes,
  kAllToAllBytes,
  kBarrier,
};
const char* toString(OpKind kind);

// What every rank must agree on for one collective. Fixed layout: it is exchanged as bytes.
struct CollectiveDescriptor {
  uint64_t sequence = 0;
  uint64_t count = 0;  // elements; 0 for the byte collectives (their lengths may differ per rank)
  int16_t root = -1;   // broadcast only (broadcastAsync refuses a root past it)
  OpKind kind = OpKind::kBarrier;
  DataType dtype = DataType::kUInt8;
  ReduceOp op = ReduceOp::kSum;  // allreduce only
  uint8_t tag_high = 0;          // with tag_low: the issuing thread's CollectiveTag (collective_tag.h)
  uint16_t tag_low = 0;

  uint32_t tag() const { return (static_cast<uint32_t>(tag_high) << 16) | tag_low; }
  void setTag(uint32_t tag) {
    tag_high = static_cast<uint8_t>(tag >> 16);
    tag_low = static_cast<uint16_t>(tag & 0xFFFF);
  }
};
static_assert(sizeof(CollectiveDescriptor) == 24, "descriptor is exchanged as 24 bytes");

// "allreduce(float32, 1024 elements, sum)"
std::string describe(const CollectiveDescriptor& d);
// Empty when all agree, else the CommError text naming the first disagreeing rank and rank 0's call.
std::string findDisagreement(const std::vector<CollectiveDescriptor>& all);

// State shared by the communicator and the Work handles it gave out (a Work may outlive it).
struct CommShared {
  CommShared(std::unique_ptr<dist::Store> store, int rank, int size, std::string backend)
      : store(std::move(store)), board(*this->store, rank, size), rank(rank), size(size), backend(std::move(backend)) {}

  // Marks the communicator broken (first message wins) and returns the message in force.
  std::string breakWith(const std::string& message);
  // Empty while healthy.
  std::string brokenMessage() const;

  // This communicator's key space (a PrefixStore over the job's store, which outlives every communicator).
  const std::unique_ptr<dist::Store> store;
  ArrivalBoard board;
  const int rank;
  const int size;
  const std::string backend;
  // True while the communication thread is inside a backend call (hang reports say where it is stuck).
  std::atomic<bool> in_backend{false};
  // How long a caller waiting on a Work polls before it sleeps (comm/spin_wait.h), in nanoseconds.
  std::atomic<int64_t> spin_ns{std::chrono::nanoseconds(kShortSpin).count()};

 private:
  mutable std::mutex mu_;
  std::string broken_;  // guarded by mu_
};

// A Work that is already done (e.g. a zero-byte point-to-point transfer).
class CompletedWork final : public Work {
 public:
  void wait(std::chrono::milliseconds) override {}
  bool isCompleted() const override { return true; }
  std::chrono::nanoseconds duration() const override { return std::chrono::nanoseconds(0); }
};

// A Work whose waiter drives completion itself (polling a backend request), under one mutex: a backend's
// point-to-point Work implements waitLocked(), which runs with mu_ held and sets done_ and duration_.
class PolledWork : public Work {
 public:
  void wait(std::chrono::milliseconds timeout) final {
    std::lock_guard<std::mutex> lock(mu_);
    waitLocked(timeout);
  }
  bool isCompleted() const final {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  std::chrono::nanoseconds duration() const final {
    std::lock_guard<std::mutex> lock(mu_);
    return duration_;
  }

 protected:
  virtual void waitLocked(std::chrono::milliseconds timeout) = 0;  // mu_ is held

  mutable std::mutex mu_;
  bool done_ = false;                     // guarded by mu_
  std::chrono::nanoseconds duration_{0};  // guarded by mu_
};

// A Work completed by another thread: finish() or fail() exactly once.
class ThreadWork final : public Work {
 public:
  // For collectives: `descriptor` names it in timeout reports.
  ThreadWork(std::shared_ptr<CommShared> shared, CollectiveDescriptor descriptor);
  void wait(std::chrono::milliseconds timeout) override;
  bool isCompleted() const override;
  std::chrono::nanoseconds duration() const override;

  void start();
  void finish();
  void fail(std::exception_ptr error);
  const CollectiveDescriptor& descriptor() const { return descriptor_; }

 private:
  std::shared_ptr<CommShared> shared_;
  const CollectiveDescriptor descriptor_;
  mutable std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;                                // guarded by mu_
  std::atomic<bool> done_flag_{false};               // done_, for wait()'s poll without mu_
  std::exception_ptr error_;                         // guarded by mu_
  std::chrono::steady_clock::time_point started_{};  // guarded by mu_
  std::chrono::nanoseconds duration_{0};             // guarded by mu_
};

// The TimeoutError text for a collective: names it, its sequence number, the missing ranks and whether
// the communication thread is stuck inside the backend.
std::string timeoutMessage(CommShared& shared, const CollectiveDescriptor& d, std::chrono::milliseconds waited);

// Publishes this rank's arrival and waits for all `size` ranks; TimeoutError naming those that did not
// join. `what` starts the message ("gloo rendezvous").
void waitForAllRanks(dist::Store& store, int rank, int size, std::chrono::milliseconds timeout,
                     const std::string& what);

class CommunicatorBase : public Communicator {
 public:
  // `store` is this communicator's own key space (see CommShared::store).
  CommunicatorBase(int rank, int size, const config::CommOptions& options, std::unique_ptr<dist::Store> store,
                   std::string backend);
  ~CommunicatorBase() override;

  int rank() const final { return rank_; }
  int size() const final { return size_; }
  std::string backendName() const final { return shared_->backend; }
  std::chrono::milliseconds timeout() const final { return timeout_; }
  uint64_t nextSequence() const final { return next_sequence_; }

  WorkPtr allreduceAsync(Buffer buffer, ReduceOp op) final;
  WorkPtr broadcastAsync(Buffer buffer, int root) final;
  WorkPtr allgatherAsync(Buffer send, Buffer recv) final;
  std::vector<std::vector<uint8_t>> allgatherBytes(const std::vector<uint8_t>& mine) final;
  std::vector<std::vector<uint8_t>> allToAllBytes(const std::vector<std::vector<uint8_t>>& send) final;
  void allToAllBytesInto(const std::shared_ptr<AllToAllExchange>& exchange) final;
  void allgatherBytesInto(const std::shared_ptr<ByteExchange>& exchange) final;
  void barrier() final;

  // Used for allreduce of host buffers instead of runAllreduce (comm.allreduce_algorithm: ring). It gets
  // kSum for kAverage; the division happens here.
  void setAllreduceAlgorithm(AllreduceAlgorithm algorithm) { algorithm_ = std::move(algorithm); }

  std::chrono::nanoseconds waitPoll() const final { return std::chrono::nanoseconds(shared_->spin_ns.load()); }
  bool canReadPeerMemory() const final { return peer_memory_.enabled(); }
  void readPeerMemory(int peer, const void* remote, void* local, size_t bytes) final {
    peer_memory_.read(peer, remote, local, bytes);
  }
  void postPeerNotice(int peer, PeerNotice notice, std::chrono::milliseconds timeout) final {
    peer_memory_.post(peer, notice, timeout);
  }
  PeerNotice takePeerNotice(int peer, std::chrono::milliseconds timeout) final {
    return peer_memory_.take(peer, timeout);
  }

 protected:
  // Agrees with the other ranks, through the store, whether same-host copies work (comm/peer_memory.h),
  // and settles how long waits poll before they sleep (comm.spin_us; auto polls long only on one host
  // whose CPUs give each rank two). Backends whose point-to-point the ring uses call it at the end of their
  // constructor, on every rank.
  void setUpPeerMemory(bool wanted);

  // Backend hooks, run on the communication thread in issue order. Buffers are validated already (sizes
  // consistent, count > 0 for the buffer collectives, size() > 1).
  virtual void runAllreduce(Buffer buffer, ReduceOp op) = 0;
  virtual void runBroadcast(Buffer buffer, int root) = 0;
  virtual void runAllgather(Buffer send, Buffer recv) = 0;
  // With checksOwnDescriptors() true it also does the agreement check itself, when checkCollectives().
  virtual std::vector<std::vector<uint8_t>> runAllgatherBytes(const std::vector<uint8_t>& mine) = 0;
  virtual std::vector<std::vector<uint8_t>> runAllToAllBytes(const std::vector<std::vector<uint8_t>>& send) = 0;
  virtual void runBarrier() = 0;
  // all[r] = rank r's descriptor (an allgather of 24 bytes).
  virtual void exchangeDescriptors(const CollectiveDescriptor& mine, std::vector<CollectiveDescriptor>& all) = 0;
  // True when `e` is the backend's own timeout (then it is reported as a hang, with the missing ranks).
  virtual bool isBackendTimeout(const std::exception& e) const { return false; }
  // Collectives of a single rank are local no-ops (copies) unless the backend must see them (NCCL: the
  // data live on a device and the caller's stream ordering still applies).
  virtual bool runsSingleRank() const { return false; }
  // True when runAllgatherBytes overlaps the agreement check with its own exchange (posting the 24-byte
  // descriptor exchange and the data at once) instead of paying a round of its own before it.
  virtual bool checksOwnDescriptors() const { return false; }

  bool checkCollectives() const { return check_collectives_; }
  // The collective being executed (valid inside the run* hooks, on the communication thread).
  const CollectiveDescriptor& runningDescriptor() const { return running_; }
  // Throws the CommError that names the first rank whose descriptor differs; nothing when all agree.
  static void requireAgreement(const std::vector<CollectiveDescriptor>& all);

  // Derived destructors call this first, so that no hook runs on a half-destroyed object. Returns false
  // when the thread is stuck in the backend and was left behind (it must not touch the backend again).
  bool stopThread();
  const std::shared_ptr<CommShared>& shared() const { return shared_; }
  dist::Store& store() const { return *shared_->store; }
  // Runs `fn` with in_backend set.
  template <typename Fn>
  auto inBackend(Fn&& fn) {
    struct Guard {
      std::atomic<bool>& flag;
      ~Guard() { flag = false; }
    } guard{shared_->in_backend};
    shared_->in_backend = true;
    return fn();
  }

 private:
  // The queue lives apart from the communicator so that a thread stuck in the backend can be left
  // behind at destruction without touching freed memory when (if ever) it returns.
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::pair<std::shared_ptr<ThreadWork>, std::function<void()>>> tasks;  // guarded by mu
    bool busy = false;       // guarded by mu: a task is executing
    bool stop = false;       // guarded by mu
    // Read without mu by the idle thread's poll before it sleeps on cv: tasks.size() and stop, mirrored.
    std::atomic<size_t> queued{0};
    std::atomic<bool> stopping{false};
    // CommShared::spin_ns, mirrored: the thread holds only the queue, so that one left behind in the backend
    // keeps nothing else of the communicator alive (CommShared's board and store among them).
    std::atomic<int64_t> spin_ns{std::chrono::nanoseconds(kShortSpin).count()};
  };
  static void loop(std::shared_ptr<Queue> queue);
  WorkPtr enqueue(CollectiveDescriptor descriptor, std::function<void()> run);
  // Same-host paths (peer_memory_ enabled): the agreement check and the byte collectives by notices and
  // copies out of the peers' memory instead of through the backend.
  void exchangeDescriptorsByNotices(const CollectiveDescriptor& mine, std::vector<CollectiveDescriptor>& all);
  // Gives every peer q the bytes offer[q]; result[peer] receives what `peer` offers this rank (resized, its
  // capacity reused); result[rank()] is untouched.
  void exchangeByCopies(const std::vector<const std::vector<uint8_t>*>& offer,
                        std::vector<std::vector<uint8_t>>& result);
  // Arrival, agreement check and the operation itself, on the communication thread.
  void execute(const CollectiveDescriptor& descriptor, const std::function<void()>& run);

  const int rank_;
  const int size_;
  const std::chrono::milliseconds timeout_;
  const bool check_collectives_;
  const int spin_us_;  // comm.spin_us: -1 auto (settled by setUpPeerMemory)
  std::shared_ptr<CommShared> shared_;
  AllreduceAlgorithm algorithm_;
  PeerMemory peer_memory_;  // set once in the constructor of the backend, read-only afterwards
  uint64_t next_sequence_ = 0;  // only the issuing thread touches it
  CollectiveDescriptor running_;  // only the communication thread touches it
  std::shared_ptr<Queue> queue_;
  std::thread thread_;
};

}  // namespace ringtrain::comm
