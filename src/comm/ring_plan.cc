#include "ringtrain/comm/ring_plan.h"

#include <algorithm>

#include "ringtrain/core/error.h"

namespace ringtrain::comm {

namespace {
int mod(int a, int p) { return ((a % p) + p) % p; }
}  // namespace

RingPlan RingPlan::make(size_t count, int ranks, size_t segment_elements) {
  RT_CHECK_GE(ranks, 1);
  RingPlan plan;
  plan.count = count;
  plan.ranks = ranks;
  const size_t largest_chunk = (count + ranks - 1) / ranks;
  const size_t per_segment = std::max<size_t>(segment_elements, 1);
  plan.segments = std::max<size_t>(1, (largest_chunk + per_segment - 1) / per_segment);
  return plan;
}

size_t RingPlan::chunkBegin(int chunk) const {
  const size_t c = static_cast<size_t>(chunk);
  const size_t base = count / ranks, extra = count % ranks;
  return c * base + std::min(c, extra);
}

size_t RingPlan::segmentBegin(int chunk, size_t segment) const {
  const size_t size = chunkSize(chunk);
  const size_t base = size / segments, extra = size % segments;
  return chunkBegin(chunk) + segment * base + std::min(segment, extra);
}

int RingPlan::sendChunk(int rank, int step) const {
  return isReduceStep(step) ? mod(rank - step, ranks) : mod(rank + 1 - (step - (ranks - 1)), ranks);
}

int RingPlan::recvChunk(int rank, int step) const {
  return isReduceStep(step) ? mod(rank - step - 1, ranks) : mod(rank - (step - (ranks - 1)), ranks);
}

size_t ringSegmentElements(size_t segment_bytes, size_t element_size) {
  return std::max<size_t>(1, segment_bytes / std::max<size_t>(element_size, 1));
}

}  // namespace ringtrain::comm
