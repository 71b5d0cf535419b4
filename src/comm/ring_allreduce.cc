// The pipelined ring allreduce.
//
// Indexing (ring_plan.h): the buffer is P chunks, each cut into S segments. There are 2(P-1) steps; at step
// s rank r sends chunk sendChunk(r, s) to r+1 and receives chunk recvChunk(r, s) from r-1. In the first P-1
// steps (reduce-scatter) what arrives is added into the rank's own copy of that chunk; in the last P-1 steps
// (all-gather) it overwrites it. The chunk sent at step s+1 is the chunk received at step s.
//
// Pipeline: number the messages m = step * S + segment, 0 <= m < M = 2(P-1)S; message m goes out with tag
// tag_base + m mod kRingTagSpan, and every rank sends and receives them in increasing m. Send m depends only
// on receive m - S (its data is what arrived one step earlier), so a rank works through m in order:
//   a. post receives ahead, up to W = ring_inflight outstanding: reduce-scatter receives land in one of W
//      scratch segments (slot m mod W); all-gather receives land directly in the buffer. That place was read
//      by this rank's reduce-scatter send of the same segment, which may still be outstanding when the
//      receive is posted, but the bytes that will arrive there are the segment's full reduction, which
//      exists only after rank r+1 has received that send: the transport has finished reading the place
//      before anything can be written into it, so no extra wait is needed;
//   b. post send m (at most W sends outstanding: wait the oldest first);
//   c. wait receive m and reduce it into the buffer (average divides the rank's own fully reduced chunk by
//      P at its last reduce-scatter step, so every rank gathers the same rounded values).
// While a rank reduces segment k, segments k+1.. are on the wire in both directions: sending, receiving and
// reducing overlap. Deadlock-freedom: every wait in round m is for a send < m+1 whose receive the peer
// posted in a round <= m, or for receive m whose send the predecessor posts in round m before waiting on
// anything of round m; by induction on m every rank finishes every round.
//
// Same-host copy (Communicator::canReadPeerMemory, RingOptions::peer_copy): no data is sent. In place of
// message m the sender posts a 16-byte notice {m, address of segment m in its buffer} to the receiver's
// shared-memory queue (Communicator::postPeerNotice), and the receiver, at c., copies the segment straight
// out of the sender's memory (one copy instead of the two of a socket) to where the message would have
// landed. Posting never waits for the receiver (the queue holds 256 notices, more than a rank can run
// ahead), so b. has nothing to wait for. The sender's segment stays unchanged until the receiver has copied
// it, by the argument of a. (what overwrites it is a reduction that needs this copy first). The one
// exception is the end: a rank may return while its successor still copies its last segments, so every
// rank posts its predecessor a final notice after its last copy and takes its successor's before
// returning. The notice queue between two ranks is one FIFO for everything, which stays in step because
// every rank consumes its notices in the order they are posted.
//
// Small buffers (<= direct_max_bytes) are latency-bound: there every rank posts P-1 receives, sends its
// buffer to every peer, and folds the P copies in rank order ((x0 op x1) op x2 ...), the same order on
// every rank, so results stay bit-identical across ranks. With same-host copy every rank posts each peer a
// notice with its buffer's address, copies the P-1 buffers it is told about, then posts each peer a final
// notice and takes theirs before it overwrites its own buffer with the result.
#include "ringtrain/comm/ring_allreduce.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kept_for_good.h"
#include "peer_memory.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/comm/ring_plan.h"
#include "ringtrain/core/error.h"

namespace ringtrain::comm {

namespace {

// Per-thread scratch: W segments for reduce-scatter receives (or P copies for the direct path) plus the
// windows of outstanding operations.
// Kept between calls so the steady state allocates nothing.
struct RingScratch {
  std::unique_ptr<uint8_t[]> bytes;
  size_t capacity = 0;
  std::vector<WorkPtr> sends, recvs;

  uint8_t* ensure(size_t needed, size_t window) {
    if (needed > capacity) {
      bytes.reset(new uint8_t[needed]);
      capacity = needed;
    }
    if (sends.size() < window) {
      sends.resize(window);
      recvs.resize(window);
    }
    return bytes.get();
  }

  // After a failure, operations may still be outstanding and write into the scratch later: give it up
  // (kept for good, kept_for_good.h) so that no later call reuses memory a stale receive can still touch.
  void abandon() {
    keepForGood(std::shared_ptr<uint8_t[]>(bytes.release()));
    capacity = 0;
    sends.assign(sends.size(), nullptr);
    recvs.assign(recvs.size(), nullptr);
  }
};

thread_local RingScratch t_scratch;

// `context` (which quotes e) as the same kind of error: a timeout stays a TimeoutError.
[[noreturn]] void rethrowWithContext(const Error& e, const std::string& context) {
  if (dynamic_cast<const TimeoutError*>(&e)) throw TimeoutError(context);
  throw CommError(context);
}

class Ring {
 public:
  Ring(Communicator& comm, Buffer buffer, ReduceOp op, const RingOptions& options)
      : comm_(comm), buffer_(buffer), op_(op), rank_(comm.rank()), size_(comm.size()),
        esize_(elementSize(buffer.dtype)),
        plan_(RingPlan::make(buffer.count, comm.size(), ringSegmentElements(options.segment_bytes, esize_))),
        window_(static_cast<size_t>(std::clamp<int>(options.inflight, 1, kRingTagSpan / 2))),
        tag_base_(options.tag_base),
        peer_copy_(options.peer_copy && comm.canReadPeerMemory()),
        timeout_(options.timeout.count() > 0 ? options.timeout : comm.timeout()),
        base_(static_cast<uint8_t*>(buffer.data)) {
    // Chunk 0 is a largest chunk and its segment 0 a largest segment.
    slot_bytes_ = plan_.segmentSize(0, 0) * esize_;
    scratch_ = t_scratch.ensure(window_ * slot_bytes_, window_);
  }

  void run() {
    const size_t messages = plan_.messages();
    for (size_t m = 0; m < messages; ++m) {
      // a. receives ahead; the one for m is always posted before b.
      while (recv_posted_ < std::min(messages, m + window_)) postRecv(recv_posted_);
      // b.
      if (send_posted_ - send_waited_ == window_) waitSend();
      postSend(m);
      // c.
      finishRecv(m);
    }
    while (send_waited_ < send_posted_) waitSend();
    if (peer_copy_) finishCopies(messages);
  }

 private:
  int step(size_t m) const { return static_cast<int>(m / plan_.segments); }
  size_t segment(size_t m) const { return m % plan_.segments; }
  uint32_t tag(size_t m) const { return tag_base_ + static_cast<uint32_t>(m % kRingTagSpan); }

  void postSend(size_t m) {
    const int chunk = plan_.sendChunk(rank_, step(m));
    const size_t count = plan_.segmentSize(chunk, segment(m));
    WorkPtr& slot = t_scratch.sends[m % window_];
    uint8_t* data = base_ + plan_.segmentBegin(chunk, segment(m)) * esize_;
    if (count == 0) {
      slot = nullptr;
    } else if (peer_copy_) {
      slot = nullptr;
      try {
        comm_.postPeerNotice(plan_.next(rank_), PeerNotice{m, reinterpret_cast<uint64_t>(data)}, timeout_);
      } catch (const Error& e) {
        fail(e, "notice to", plan_.next(rank_), m);
      }
    } else {
      slot = comm_.sendAsync(data, count * esize_, plan_.next(rank_), tag(m));
    }
    ++send_posted_;
  }

  void waitSend() {
    const size_t m = send_waited_;
    wait(t_scratch.sends[m % window_], "send to", plan_.next(rank_), m);
    ++send_waited_;
  }

  void* recvTarget(size_t j) const {
    if (plan_.isReduceStep(step(j))) return scratch_ + (j % window_) * slot_bytes_;
    return base_ + plan_.segmentBegin(plan_.recvChunk(rank_, step(j)), segment(j)) * esize_;
  }

  void postRecv(size_t j) {
    const int chunk = plan_.recvChunk(rank_, step(j));
    const size_t count = plan_.segmentSize(chunk, segment(j));
    WorkPtr& slot = t_scratch.recvs[j % window_];
    if (count == 0 || peer_copy_) {  // peer copy: the notice is taken at c.
      slot = nullptr;
    } else {
      slot = comm_.recvAsync(recvTarget(j), count * esize_, plan_.prev(rank_), tag(j));
    }
    ++recv_posted_;
  }

  void finishRecv(size_t m) {
    wait(t_scratch.recvs[m % window_], "receive from", plan_.prev(rank_), m);
    if (peer_copy_) copyFromPrev(m);
    const int s = step(m);
    if (!plan_.isReduceStep(s)) return;
    const int chunk = plan_.recvChunk(rank_, s);
    const size_t count = plan_.segmentSize(chunk, segment(m));
    uint8_t* dst = base_ + plan_.segmentBegin(chunk, segment(m)) * esize_;
    reduceInto(dst, recvTarget(m), count, buffer_.dtype, op_);
    if (op_ == ReduceOp::kAverage && s == plan_.reduceScatterSteps() - 1) {
      finishAverage(dst, count, buffer_.dtype, size_);
    }
  }

  // Peer copy: takes the notice for m and copies the segment it names to where its data would land.
  void copyFromPrev(size_t m) {
    const int chunk = plan_.recvChunk(rank_, step(m));
    const size_t bytes = plan_.segmentSize(chunk, segment(m)) * esize_;
    if (bytes == 0) return;  // nothing was posted for an empty segment
    const int prev = plan_.prev(rank_);
    try {
      const PeerNotice notice = comm_.takePeerNotice(prev, timeout_);
      RT_CHECK_T(CommError, notice.message == m, "notice for message ", notice.message, " arrived in place of ", m,
                 " (ranks out of step)");
      comm_.readPeerMemory(prev, reinterpret_cast<const void*>(notice.value), recvTarget(m), bytes);
    } catch (const Error& e) {
      fail(e, "copy from", prev, m);
    }
  }

  // Peer copy, after the last message: tell the predecessor its buffer is no longer read, and wait until the
  // successor says the same about this rank's buffer.
  void finishCopies(size_t messages) {
    try {
      comm_.postPeerNotice(plan_.prev(rank_), PeerNotice{messages, 0}, timeout_);
    } catch (const Error& e) {
      fail(e, "final notice to", plan_.prev(rank_), messages);
    }
    try {
      const PeerNotice done = comm_.takePeerNotice(plan_.next(rank_), timeout_);
      RT_CHECK_T(CommError, done.message == messages, "final notice carries ", done.message, " in place of ",
                 messages, " (ranks out of step)");
    } catch (const Error& e) {
      fail(e, "final notice from", plan_.next(rank_), messages);
    }
  }

  void wait(WorkPtr& work, const char* what, int peer, size_t m) {
    if (!work) return;
    try {
      work->wait(timeout_);
    } catch (const Error& e) {
      fail(e, what, peer, m);
    }
    work.reset();
  }

  [[noreturn]] void fail(const Error& e, const char* what, int peer, size_t m) {
    t_scratch.abandon();
    rethrowWithContext(e, ringtrain::detail::concat("ring allreduce (", buffer_.count, " x ", toString(buffer_.dtype),
                                                    ", ", toString(op_), peer_copy_ ? ", same-host copy" : "",
                                                    ") on rank ", rank_, "/", size_, ": ", what, " rank ", peer,
                                                    " failed at step ", step(m), " segment ", segment(m), ": ",
                                                    e.what()));
  }

  Communicator& comm_;
  Buffer buffer_;
  ReduceOp op_;
  int rank_, size_;
  size_t esize_;
  RingPlan plan_;
  size_t window_;
  uint32_t tag_base_;
  bool peer_copy_;
  std::chrono::milliseconds timeout_;
  uint8_t* base_;
  size_t slot_bytes_ = 0;
  uint8_t* scratch_ = nullptr;  // owned by t_scratch, which outlives this call
  size_t send_posted_ = 0, send_waited_ = 0, recv_posted_ = 0;
};

[[noreturn]] void directFailure(const Communicator& comm, const Buffer& buffer, ReduceOp op, const std::string& what,
                                const Error& e) {
  rethrowWithContext(e, ringtrain::detail::concat("ring allreduce (direct, ", buffer.count, " x ",
                                                  toString(buffer.dtype), ", ", toString(op), ") on rank ", comm.rank(),
                                                  "/", comm.size(), ": ", what, " failed: ", e.what()));
}

// Every rank's buffer into copies[r * bytes] (this rank's own slot is left alone), by messages.
void directMessages(Communicator& comm, Buffer buffer, ReduceOp op, std::chrono::milliseconds timeout, uint32_t tag,
                    uint8_t* copies) {
  const int p = comm.size(), me = comm.rank();
  const size_t bytes = buffer.bytes();
  std::vector<WorkPtr>& recvs = t_scratch.recvs;
  std::vector<WorkPtr>& sends = t_scratch.sends;
  for (int q = 0; q < p; ++q) {
    if (q != me) recvs[q] = comm.recvAsync(copies + static_cast<size_t>(q) * bytes, bytes, q, tag);
  }
  for (int i = 1; i < p; ++i) {
    const int q = (me + i) % p;
    sends[q] = comm.sendAsync(buffer.data, bytes, q, tag);
  }
  auto wait = [&](WorkPtr& work, const char* what, int peer) {
    try {
      work->wait(timeout);
    } catch (const Error& e) {
      directFailure(comm, buffer, op, ringtrain::detail::concat(what, " rank ", peer), e);
    }
    work.reset();
  };
  for (int i = 1; i < p; ++i) {
    const int q = (me + p - i) % p;
    wait(recvs[q], "receive from", q);
  }
  for (int i = 1; i < p; ++i) {
    const int q = (me + i) % p;
    wait(sends[q], "send to", q);
  }
}

// The same by same-host copies (exchangeOffers): every rank offers its buffer, copies the P-1 offered to it,
// and returns only once every peer has copied its own.
void directPeerCopies(Communicator& comm, Buffer buffer, ReduceOp op, std::chrono::milliseconds timeout,
                      uint8_t* copies) {
  const size_t bytes = buffer.bytes();
  try {
    exchangeOffers(
        comm, [&](int) { return PeerOffer{buffer.data, bytes}; },
        [&](int peer, size_t offered) {
          RT_CHECK_T(CommError, offered == bytes, "rank ", peer, " offered ", offered, " bytes where ", bytes,
                     " were expected (ranks out of step)");
          return static_cast<void*>(copies + static_cast<size_t>(peer) * bytes);
        },
        timeout);
  } catch (const Error& e) {
    directFailure(comm, buffer, op, "same-host exchange", e);
  }
}

// The small-buffer path (see the top of the file).
void directAllreduce(Communicator& comm, Buffer buffer, ReduceOp op, const RingOptions& options) {
  const int p = comm.size(), me = comm.rank();
  const size_t bytes = buffer.bytes();
  const auto timeout = options.timeout.count() > 0 ? options.timeout : comm.timeout();
  uint8_t* copies = t_scratch.ensure(static_cast<size_t>(p) * bytes, static_cast<size_t>(p));
  auto copy = [&](int r) { return copies + static_cast<size_t>(r) * bytes; };
  if (options.peer_copy && comm.canReadPeerMemory()) {
    directPeerCopies(comm, buffer, op, timeout, copies);
  } else {
    directMessages(comm, buffer, op, timeout, options.tag_base, copies);
  }
  std::memcpy(copy(me), buffer.data, bytes);
  reduceTo(buffer.data, copy(0), copy(1), buffer.count, buffer.dtype, op);
  for (int q = 2; q < p; ++q) reduceInto(buffer.data, copy(q), buffer.count, buffer.dtype, op);
  if (op == ReduceOp::kAverage) finishAverage(buffer.data, buffer.count, buffer.dtype, p);
}

}  // namespace

RingOptions ringOptionsFrom(const config::CommOptions& comm) {
  RingOptions options;
  options.segment_bytes = static_cast<size_t>(std::max(comm.ring_segment_kb, 1)) * 1024;
  options.inflight = std::max(comm.ring_inflight, 1);
  options.direct_max_bytes = static_cast<size_t>(std::max(comm.ring_direct_kb, 0)) * 1024;
  options.peer_copy = comm.same_host_copy;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(comm.timeout_s * 1000));
  return options;
}

void ringAllreduce(Communicator& comm, Buffer buffer, ReduceOp op, const RingOptions& options) {
  RT_CHECK_T(CommError, !buffer.device.isCuda(), "ring allreduce works on host buffers only");
  RT_CHECK_T(CommError, buffer.data != nullptr || buffer.count == 0, "ring allreduce: null buffer");
  if (comm.size() == 1 || buffer.count == 0) return;
  try {
    if (buffer.bytes() <= options.direct_max_bytes) {
      directAllreduce(comm, buffer, op, options);
    } else {
      Ring(comm, buffer, op, options).run();
    }
  } catch (...) {
    t_scratch.abandon();
    throw;
  }
}

}  // namespace ringtrain::comm
