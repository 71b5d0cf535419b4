// Pure arithmetic of the ring allreduce: which elements each rank sends and receives at every step. No
// communication here, so every case (any element count, any world size) is tested exhaustively without
// processes; src/comm/ring_allreduce.cc walks this plan over a Communicator.
//
// The buffer of N elements is cut into P chunks (one per rank), chunk c = [chunkBegin(c), chunkBegin(c+1)):
// the first N % P chunks hold N / P + 1 elements, the others N / P (so 0 elements when N < P is fine).
// Every chunk is cut the same way into `segments` near-equal segments (segmentsPerChunk), the unit that is
// pipelined: segment k of chunk c = [segmentBegin(c, k), segmentBegin(c, k + 1)).
//
// With P ranks there are 2(P-1) steps, the first P-1 reduce-scatter, the last P-1 all-gather. At step s
// rank r sends chunk sendChunk(s) to rank r+1 and receives chunk recvChunk(s) from rank r-1 (mod P):
//   reduce-scatter, s = 0..P-2:   send (r - s) mod P,       receive (r - s - 1) mod P and reduce it in;
//   all-gather,  s = P-1..2P-3:   send (r + 1 - s') mod P,  receive (r - s') mod P and store it (s' = s-P+1).
// After reduce-scatter rank r holds the full reduction of chunk (r + 1) mod P; all-gather circulates it.
// The chunk a rank sends at step s+1 is the one it received at step s (for every s < 2P-3), which is what
// lets segment k of step s+1 leave as soon as segment k of step s has arrived.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringtrain::comm {

struct RingPlan {
  size_t count = 0;     // elements in the buffer
  int ranks = 1;        // world size P
  size_t segments = 1;  // segments per chunk (>= 1)

  // segment_elements: the target segment length (e.g. comm.ring_segment_kb / element size), >= 1.
  static RingPlan make(size_t count, int ranks, size_t segment_elements);

  int steps() const { return ranks > 1 ? 2 * (ranks - 1) : 0; }
  int reduceScatterSteps() const { return ranks - 1; }
  bool isReduceStep(int step) const { return step < ranks - 1; }
  // Point-to-point messages each rank sends (and receives) in one allreduce: steps() * segments.
  size_t messages() const { return static_cast<size_t>(steps()) * segments; }

  size_t chunkBegin(int chunk) const;  // chunk in [0, P]; chunkBegin(P) == count
  size_t chunkSize(int chunk) const { return chunkBegin(chunk + 1) - chunkBegin(chunk); }
  size_t segmentBegin(int chunk, size_t segment) const;  // segment in [0, segments]
  size_t segmentSize(int chunk, size_t segment) const {
    return segmentBegin(chunk, segment + 1) - segmentBegin(chunk, segment);
  }

  int sendChunk(int rank, int step) const;
  int recvChunk(int rank, int step) const;
  int next(int rank) const { return (rank + 1) % ranks; }
  int prev(int rank) const { return (rank + ranks - 1) % ranks; }
};

// Bytes per segment from comm.ring_segment_kb, clamped to at least one element.
size_t ringSegmentElements(size_t segment_bytes, size_t element_size);

}  // namespace ringtrain::comm
