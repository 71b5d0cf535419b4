#include "ringtrain/comm/ring_plan.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

namespace ringtrain::comm {
namespace {

const std::vector<size_t> kCounts = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 257, 1000};
const std::vector<size_t> kSegmentElements = {1, 2, 3, 7, 64, 1 << 20};

TEST(RingPlan, ChunksAndSegmentsTileTheBuffer) {
  for (int p = 1; p <= 8; ++p) {
    for (size_t n : kCounts) {
      for (size_t seg : kSegmentElements) {
        const RingPlan plan = RingPlan::make(n, p, seg);
        SCOPED_TRACE(testing::Message() << "P=" << p << " N=" << n << " seg=" << seg);
        ASSERT_GE(plan.segments, 1u);
        EXPECT_EQ(plan.chunkBegin(0), 0u);
        EXPECT_EQ(plan.chunkBegin(p), n);
        size_t smallest = n, largest = 0;
        for (int c = 0; c < p; ++c) {
          smallest = std::min(smallest, plan.chunkSize(c));
          largest = std::max(largest, plan.chunkSize(c));
          EXPECT_EQ(plan.segmentBegin(c, 0), plan.chunkBegin(c));
          EXPECT_EQ(plan.segmentBegin(c, plan.segments), plan.chunkBegin(c + 1));
          for (size_t k = 0; k < plan.segments; ++k) {
            EXPECT_LE(plan.segmentBegin(c, k), plan.segmentBegin(c, k + 1));
            // No segment is longer than asked, except that a chunk never needs more than its size.
            EXPECT_LE(plan.segmentSize(c, k), std::max<size_t>(seg, 1));
          }
        }
        EXPECT_LE(largest - smallest, 1u) << "chunks are balanced";
        // Segments are as few as the target length allows.
        EXPECT_EQ(plan.segments, std::max<size_t>(1, (largest + seg - 1) / seg));
      }
    }
  }
}

TEST(RingPlan, StepsFormARing) {
  for (int p = 1; p <= 8; ++p) {
    const RingPlan plan = RingPlan::make(100, p, 7);
    EXPECT_EQ(plan.steps(), 2 * (p - 1));
    for (int r = 0; r < p; ++r) {
      EXPECT_EQ(plan.prev(plan.next(r)), r);
      for (int s = 0; s < plan.steps(); ++s) {
        // What r receives at step s is what its predecessor sends at step s.
        EXPECT_EQ(plan.recvChunk(r, s), plan.sendChunk(plan.prev(r), s));
        // What r sends at step s+1 is what it received at step s: the pipeline's dependency.
        if (s + 1 < plan.steps()) EXPECT_EQ(plan.sendChunk(r, s + 1), plan.recvChunk(r, s));
      }
    }
  }
}

// Runs the plan on plain arrays, one message per (step, segment), in the order the real ring sends them,
// and checks that every rank ends with the elementwise sum.
TEST(RingPlan, SimulatedRingSumsEveryElement) {
  for (int p = 1; p <= 8; ++p) {
    for (size_t n : kCounts) {
      for (size_t seg : kSegmentElements) {
        SCOPED_TRACE(testing::Message() << "P=" << p << " N=" << n << " seg=" << seg);
        const RingPlan plan = RingPlan::make(n, p, seg);
        std::vector<std::vector<int64_t>> data(p, std::vector<int64_t>(n));
        for (int r = 0; r < p; ++r) {
          for (size_t i = 0; i < n; ++i) data[r][i] = (r + 1) * 1000003LL + static_cast<int64_t>(i * i);
        }
        for (int s = 0; s < plan.steps(); ++s) {
          for (size_t k = 0; k < plan.segments; ++k) {
            // Every rank sends first (messages are copies), then every rank receives.
            std::vector<std::vector<int64_t>> wire(p);
            for (int r = 0; r < p; ++r) {
              const int c = plan.sendChunk(r, s);
              const size_t b = plan.segmentBegin(c, k), e = plan.segmentBegin(c, k + 1);
              wire[r].assign(data[r].begin() + b, data[r].begin() + e);
            }
            for (int r = 0; r < p; ++r) {
              const int c = plan.recvChunk(r, s);
              const size_t b = plan.segmentBegin(c, k);
              const auto& msg = wire[plan.prev(r)];
              ASSERT_EQ(msg.size(), plan.segmentSize(c, k));
              for (size_t i = 0; i < msg.size(); ++i) {
                if (plan.isReduceStep(s)) {
                  data[r][b + i] += msg[i];
                } else {
                  data[r][b + i] = msg[i];
                }
              }
            }
          }
        }
        for (int r = 0; r < p; ++r) {
          for (size_t i = 0; i < n; ++i) {
            const int64_t expected = 1000003LL * p * (p + 1) / 2 + static_cast<int64_t>(p * i * i);
            ASSERT_EQ(data[r][i], expected) << "rank " << r << " element " << i;
          }
        }
      }
    }
  }
}

TEST(RingPlan, SegmentElementsFromBytes) {
  EXPECT_EQ(ringSegmentElements(256 * 1024, 4), 65536u);
  EXPECT_EQ(ringSegmentElements(3, 8), 1u);
  EXPECT_EQ(ringSegmentElements(0, 4), 1u);
}

}  // namespace
}  // namespace ringtrain::comm
