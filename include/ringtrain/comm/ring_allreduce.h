// ringtrain's own pipelined ring allreduce, written once over Communicator::sendAsync/recvAsync, so every
// backend with point-to-point operations gets it (comm.allreduce_algorithm: ring). The indexing is in
// ring_plan.h; the pipeline and its ordering argument are explained at the top of src/comm/ring_allreduce.cc.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/config/config.h"

namespace ringtrain::comm {

inline constexpr size_t kDefaultRingSegmentBytes = 4096 * 1024;  // comm.ring_segment_kb
inline constexpr int kDefaultRingInflight = 4;                   // comm.ring_inflight
// Buffers up to this size skip the ring: every rank sends its whole buffer to every other rank and reduces
// the P copies in rank order (one latency step instead of 2(P-1), at (P-1) x the ring's traffic).
inline constexpr size_t kDefaultRingDirectMaxBytes = 16 * 1024;  // comm.ring_direct_kb
// Tags [tag_base, tag_base + kRingTagSpan) are used; keep other point-to-point traffic of the same
// communicator out of that range while a ring runs.
inline constexpr uint32_t kRingTagSpan = 4096;

struct RingOptions {
  size_t segment_bytes = kDefaultRingSegmentBytes;
  int inflight = kDefaultRingInflight;  // segments in flight per direction (>= 1, < kRingTagSpan)
  size_t direct_max_bytes = kDefaultRingDirectMaxBytes;  // 0: always the ring
  // Copy segments straight from the predecessor's memory when comm.canReadPeerMemory() (same host): the
  // messages then carry 16-byte notices instead of data (comm.same_host_copy).
  bool peer_copy = true;
  uint32_t tag_base = kReservedTagBase;
  // Wait for any one send or receive; 0 means comm.timeout().
  std::chrono::milliseconds timeout{0};
};

// The ring's options from the job's comm section (ring_segment_kb, ring_inflight, ring_direct_kb,
// same_host_copy, timeout_s).
RingOptions ringOptionsFrom(const config::CommOptions& comm);

// In place on a host buffer: every rank ends with op(all ranks' buffers), bit-identical on all ranks.
// Sum/average/max/min on float32, float64, float16, bfloat16 (reduced in float32, rounded to nearest even)
// and int64 (average truncates toward zero); int32 and uint8 as well.
// Runs on the calling thread (a backend's communication thread) and blocks until done. With same-host
// copy its notices share one queue per pair of ranks with every other collective of the communicator: call
// it on the communication thread (as comm.allreduce_algorithm: ring does), or while no collective runs. Same call order and
// same (count, dtype, op, options) on every rank. Scratch memory is kept per thread and reused, so steady
// state allocates nothing. Throws CommError/TimeoutError naming the step, segment and peer on failure;
// the communicator should then be considered broken (operations may still be outstanding).
void ringAllreduce(Communicator& comm, Buffer buffer, ReduceOp op, const RingOptions& options);

}  // namespace ringtrain::comm
