// The seam every byte between ranks goes through. A Communicator moves raw buffers (no LibTorch types, so
// this layer compiles in a second); ddp/ adapts tensors to it. One implementation per backend (Gloo, MPI,
// NCCL) lives in src/comm/<backend>_communicator.cc; makeCommunicator() in comm/factory.h picks one.
//
// Contract shared by every collective:
//  * Same call order on every rank. Each collective gets the next sequence number; with
//    CommOptions::check_collectives on, ranks verify they agree on (sequence, operation, count, dtype) and a
//    disagreement raises CommError naming both sides instead of hanging.
//  * Asynchronous by default: *Async returns a Work; the caller keeps the buffers alive and untouched until
//    wait() returns. Work runs in issue order on the communicator's own thread (or stream, for NCCL).
//  * wait(timeout) rethrows whatever failed on the communication thread; a wait past the timeout raises
//    TimeoutError naming the collective, its sequence number and the ranks that had not arrived.
//  * Thread safety: one thread issues collectives (the training thread, or the reducer on its behalf);
//    Work::wait may be called from any thread.
//  * Point-to-point (sendAsync/recvAsync) does not queue behind collectives: it goes straight to the
//    backend and may be called from any thread, including the communication thread itself (the ring
//    allreduce runs there). Tags >= kReservedTagBase are reserved for ringtrain's own algorithms.
//  * After a timeout or a backend failure the communicator is broken: every later call raises CommError
//    quoting the first failure (a collective stream cannot resynchronize).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ringtrain::comm {

enum class DataType : uint8_t { kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32, kUInt8 };
enum class ReduceOp : uint8_t { kSum, kAverage, kMax, kMin };

size_t elementSize(DataType type);
const char* toString(DataType type);
const char* toString(ReduceOp op);

// Where a buffer lives: the host, or a CUDA device (ordinal >= 0).
struct Device {
  int cuda_index = -1;
  // The cudaStream_t the buffer was produced on (nullptr: the legacy default stream). NCCL orders its own
  // stream after it with an event, so the caller never synchronizes. Ignored for host buffers.
  void* cuda_stream = nullptr;
  bool isCuda() const { return cuda_index >= 0; }
};

struct Buffer {
  void* data = nullptr;
  size_t count = 0;  // elements, not bytes
  DataType dtype = DataType::kFloat32;
  Device device;
  // Optional: what owns the memory (ddp::asBuffer sets it to the tensor). A queued or running collective
  // holds its Buffer, so the memory outlives a caller that gave up on it (an error unwinding DDP and the
  // model while the communication thread still writes into a bucket).
  std::shared_ptr<const void> owner;
  size_t bytes() const { return count * elementSize(dtype); }
};

// Tags at or above this value are used by ringtrain's own algorithms (the ring allreduce); user p2p tags
// stay below it.
constexpr uint32_t kReservedTagBase = 0x80000000u;

// What an algorithm tells a peer on the same host (see Communicator::postPeerNotice).
struct PeerNotice {
  uint64_t message = 0;  // which message of the algorithm this stands for (checked by the receiver)
  uint64_t value = 0;    // typically an address in the sender's memory
};

// A byte allgather that a caller repeats every step (the sparse-row sync), kept between calls: `mine` is read
// in place, and each peer's bytes land in all[peer], reusing the capacity the previous call left, so that
// over same-host copies a step neither copies its input nor allocates (other transports may still
// allocate). Shared with the communication thread, so that a task still running after its caller's timeout
// never touches freed memory; after a failed call, do not reuse it (a task may still be reading `mine`).
struct ByteExchange {
  std::vector<uint8_t> mine;
  std::vector<std::vector<uint8_t>> all;  // all[r]: rank r's bytes; all[rank()] is left empty (see mine)
};

// The personalized exchange a caller repeats every step (the owner-based sparse-row sync), kept between calls
// like ByteExchange: send[r] goes to rank r and is read in place; what rank r sent lands in received[r],
// reusing last call's capacity. received[rank()] is left empty: this rank's share is send[rank()].
struct AllToAllExchange {
  std::vector<std::vector<uint8_t>> send;
  std::vector<std::vector<uint8_t>> received;
};

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until done; rethrows the communication thread's error; TimeoutError after `timeout`.
  virtual void wait(std::chrono::milliseconds timeout) = 0;
  virtual bool isCompleted() const = 0;
  // Wall time the operation itself took, once completed (for statistics).
  virtual std::chrono::nanoseconds duration() const = 0;
};
using WorkPtr = std::shared_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backendName() const = 0;  // "gloo", "mpi", "nccl"
  // The default wait used by the blocking helpers below (CommOptions::timeout_s).
  virtual std::chrono::milliseconds timeout() const = 0;
  // Sequence number the next collective will get (0 for the first); the same on every rank.
  virtual uint64_t nextSequence() const = 0;

  // In place: every rank ends with op(all ranks' buffers).
  virtual WorkPtr allreduceAsync(Buffer buffer, ReduceOp op) = 0;
  // In place: every rank ends with root's buffer.
  virtual WorkPtr broadcastAsync(Buffer buffer, int root) = 0;
  // recv holds size() * send.count elements, rank r's contribution at offset r * send.count.
  virtual WorkPtr allgatherAsync(Buffer send, Buffer recv) = 0;
  // Host bytes of any length per rank; result[r] is rank r's bytes (sparse rows use it).
  // Blocking, with the communicator's timeout; they are collectives (sequence numbered, checked).
  virtual std::vector<std::vector<uint8_t>> allgatherBytes(const std::vector<uint8_t>& mine) = 0;
  // Personalized exchange: send[r] goes to rank r; result[r] came from rank r (owner-based sparse sync).
  virtual std::vector<std::vector<uint8_t>> allToAllBytes(const std::vector<std::vector<uint8_t>>& send) = 0;
  // allgatherBytes through a ByteExchange (the same collective, sequence numbered and checked the same way).
  // The default copies through allgatherBytes; communicators with a cheaper way override it.
  virtual void allgatherBytesInto(const std::shared_ptr<ByteExchange>& exchange);
  // allToAllBytes through an AllToAllExchange (the same collective); the default copies through
  // allToAllBytes.
  virtual void allToAllBytesInto(const std::shared_ptr<AllToAllExchange>& exchange);
  virtual void barrier() = 0;

  // Point-to-point on host buffers, matched by (peer, tag) in posting order; the ring allreduce is built on
  // these. A recv must name the exact byte count the matching send sends.
  virtual WorkPtr sendAsync(const void* data, size_t bytes, int peer, uint32_t tag) = 0;
  virtual WorkPtr recvAsync(void* data, size_t bytes, int peer, uint32_t tag) = 0;

  // How long this rank's waits poll before they sleep (comm.spin_us, as settled; see src/comm/spin_wait.h).
  virtual std::chrono::nanoseconds waitPoll() const { return std::chrono::microseconds(50); }

  // Same-host single copy (see src/comm/peer_memory.h): true when every rank can copy straight out of every
  // other rank's memory and exchange notices through shared memory, the same answer on every rank.
  virtual bool canReadPeerMemory() const { return false; }
  // Copies `bytes` at `remote` in `peer`'s address space into `local`; CommError when unavailable or when the
  // peer is gone.
  virtual void readPeerMemory(int peer, const void* remote, void* local, size_t bytes);
  // A FIFO of 16-byte notices per ordered pair of ranks, through shared memory (when canReadPeerMemory()):
  // post blocks only while the peer has 256 notices from this rank not yet taken; take waits for the next
  // notice from `peer`. TimeoutError after `timeout`, CommError at once when the peer process is gone.
  // One algorithm at a time uses them (the communication thread runs one collective at a time).
  virtual void postPeerNotice(int peer, PeerNotice notice, std::chrono::milliseconds timeout);
  virtual PeerNotice takePeerNotice(int peer, std::chrono::milliseconds timeout);

  // Blocking conveniences with the communicator's timeout.
  void allreduce(Buffer buffer, ReduceOp op) { allreduceAsync(buffer, op)->wait(timeout()); }
  void broadcast(Buffer buffer, int root) { broadcastAsync(buffer, root)->wait(timeout()); }
  void allgather(Buffer send, Buffer recv) { allgatherAsync(send, recv)->wait(timeout()); }
};

}  // namespace ringtrain::comm
