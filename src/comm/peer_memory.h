// Same-host single copy between ranks. Over loopback TCP every byte a rank sends is copied twice by the
// kernel (into the socket, out of it) and moves through socket buffers a few hundred KiB at a time, each
// step a wake-up of both sides. When every rank runs on one host, a rank can instead copy a peer's segment
// straight out of the peer's address space with process_vm_readv(2): one copy, no socket buffers (Open MPI's
// shared-memory transport does the same). What tells the reader that a segment is ready is a 16-byte notice
// through a queue in shared memory, with a futex to sleep on: a wake-up of one thread instead of a trip
// through a socket and a backend's progress thread.
//
// Whether it works is agreed once, when a communicator is built: every rank creates its shared notice
// queues (a memfd, one queue per sender) and publishes in the store its boot id (the same kernel, so the
// same host), its pid, the memfd's descriptor number and the address of a word holding a random nonce.
// Every rank then reads that word out of every peer and maps every peer's queues through /proc/PID/fd.
// Another host, another PID namespace (the pid names a different process, or none), or a kernel or seccomp
// policy that forbids it (Yama ptrace_scope >= 1 for processes that are not each other's ancestors,
// containers without CAP_SYS_PTRACE) fails one of those steps. Each rank publishes its verdict and all take
// the AND, so every rank decides the same way and the algorithms that use it agree on their messages.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/spin_wait.h"
#include "ringtrain/comm/communicator.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::comm {

class PeerMemory {
 public:
  PeerMemory();
  ~PeerMemory();
  PeerMemory(PeerMemory&&) noexcept;
  PeerMemory& operator=(PeerMemory&&) noexcept;

  // Collective: every rank of the communicator calls it with the same `wanted`, in the same order relative
  // to other store traffic of that communicator. Store waits are bounded by `timeout`.
  static PeerMemory agree(dist::Store& store, int rank, int size, std::chrono::milliseconds timeout, bool wanted);

  // True on every rank when every rank can read every other one and reach its notice queues.
  bool enabled() const { return enabled_; }
  // Why it is off ("comm.same_host_copy is false", "rank 1: process_vm_readv of rank 0 ...").
  const std::string& reason() const { return reason_; }

  // Copies `bytes` from `remote` in `peer`'s address space into `local`. CommError naming the peer when the
  // peer is gone or the range is not mapped there.
  void read(int peer, const void* remote, void* local, size_t bytes) const;

  // The notice queues (see Communicator::postPeerNotice). Single producer and single consumer per queue:
  // one thread of this rank posts to a given peer, one takes from it.
  void post(int peer, PeerNotice notice, std::chrono::milliseconds timeout) const;
  PeerNotice take(int peer, std::chrono::milliseconds timeout) const;
  // How long post() and take() poll before they sleep (comm/spin_wait.h); kShortSpin until set. Set it
  // before the communication thread uses the queues.
  void setSpin(std::chrono::nanoseconds spin) { spin_ = spin; }
  std::chrono::nanoseconds spin() const { return spin_; }

  // Every post() and take() waiting now or later gives up within 100 ms with a CommError, so that a
  // communicator being destroyed (a rank unwinding a timeout) does not wait out comm.timeout_s for a peer
  // that will not come.
  void abandonWaits() const;

 private:
  struct Shared;  // mappings and the memfd
  bool enabled_ = false;
  std::string reason_ = "not set up";
  int rank_ = 0;
  std::vector<pid_t> pids_;
  std::chrono::nanoseconds spin_{kShortSpin};
  std::unique_ptr<uint64_t> probe_;  // the word peers read; heap-held so its address survives moves
  std::unique_ptr<Shared> shared_;
};

// Bytes of this rank's memory that a peer may copy (see exchangeOffers).
struct PeerOffer {
  const void* data = nullptr;
  size_t bytes = 0;
};

// One round of same-host copies among all ranks of `comm` (every rank calls it at the same point, with
// comm.canReadPeerMemory()): every peer q is offered offer(q) by notice; what each peer offers this rank is
// copied to into(peer, bytes), which says where its `bytes` go (it may refuse them by throwing). A final
// notice each way keeps every rank from returning, and freeing or overwriting what it offered, while a peer
// still copies from it. Errors name the peer; a notice that does not come is a TimeoutError.
void exchangeOffers(Communicator& comm, const std::function<PeerOffer(int peer)>& offer,
                    const std::function<void*(int peer, size_t bytes)>& into, std::chrono::milliseconds timeout);

}  // namespace ringtrain::comm
