#include "ringtrain/comm/ring_allreduce.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "testing/ring_check.h"
#include "testing/thread_p2p.h"

namespace ringtrain::comm {
namespace {

using testing::ThreadP2P;
using testing::ThreadWorld;

struct Setting {
  size_t segment_bytes;
  int inflight;
  bool rendezvous;
  size_t max_count = ~size_t{0};  // tiny segments make many messages: keep those runs short
  size_t direct_max_bytes = 0;     // the ring itself unless a test asks for the small-buffer path
  bool peer_copy = false;          // same-host copy: notices on the wire, segments read from the peer
};

// Every rank runs every (dtype, op, count) in the same order on its own thread: this also checks that
// scratch reuse between calls of different sizes is sound.
void checkWorld(int ranks, const Setting& setting) {
  SCOPED_TRACE(::testing::Message() << "P=" << ranks << " segment_bytes=" << setting.segment_bytes
                                    << " inflight=" << setting.inflight << " rendezvous=" << setting.rendezvous
                                    << " peer_copy=" << setting.peer_copy);
  ThreadWorld world(ranks, std::chrono::seconds(30), setting.rendezvous);
  world.peer_memory = setting.peer_copy;
  world.run([&](ThreadP2P& comm) {
    comm.ring_options.segment_bytes = setting.segment_bytes;
    comm.ring_options.inflight = setting.inflight;
    comm.ring_options.direct_max_bytes = setting.direct_max_bytes;
    testing::checkRingCases(comm, [&](Buffer buffer, ReduceOp op) { comm.allreduce(buffer, op); }, setting.max_count);
  });
  // The protocol really in use: segments read out of peers exactly when peer copy is on.
  if (setting.peer_copy && ranks > 1) {
    EXPECT_GT(world.peer_reads.load(), 0);
  } else {
    EXPECT_EQ(world.peer_reads.load(), 0);
  }
}

TEST(RingAllreduce, AllDtypesOpsAndCountsEagerSends) {
  for (int p = 1; p <= 5; ++p) checkWorld(p, Setting{kDefaultRingSegmentBytes, kDefaultRingInflight, false});
}

TEST(RingAllreduce, TinySegmentsDeepPipelineRendezvousSends) {
  for (int p = 2; p <= 5; ++p) {
    checkWorld(p, Setting{16, 4, true, 64});
    checkWorld(p, Setting{64, 1, true, 1000});
    checkWorld(p, Setting{24, 7, true, 1000});
    checkWorld(p, Setting{4096, 2, true});
  }
}

TEST(RingAllreduce, SmallBuffersDirectPath) {
  for (int p = 1; p <= 5; ++p) {
    checkWorld(p, Setting{kDefaultRingSegmentBytes, kDefaultRingInflight, true, ~size_t{0}, 1 << 20});
  }
}

TEST(RingAllreduce, EightRanksManySegments) { checkWorld(8, Setting{32, 3, true, 1000}); }

// Same-host copy: the same cases with 16-byte notices on the wire and every segment read out of the
// predecessor's buffer. Every case reuses its buffers at once, so a rank that returned while its successor
// still read from it, or a segment read before the predecessor finished it, shows as a wrong value.
TEST(RingAllreduce, PeerCopyAllDtypesOpsAndCounts) {
  for (int p = 1; p <= 5; ++p) {
    checkWorld(p, Setting{kDefaultRingSegmentBytes, kDefaultRingInflight, false, ~size_t{0}, 0, true});
    checkWorld(p, Setting{kDefaultRingSegmentBytes, kDefaultRingInflight, true, ~size_t{0}, 0, true});
  }
}

TEST(RingAllreduce, PeerCopyTinySegmentsDeepPipeline) {
  for (int p = 2; p <= 5; ++p) {
    checkWorld(p, Setting{16, 4, true, 64, 0, true});
    checkWorld(p, Setting{64, 1, true, 1000, 0, true});
    checkWorld(p, Setting{24, 7, false, 1000, 0, true});
  }
  checkWorld(8, Setting{32, 3, true, 1000, 0, true});
}

TEST(RingAllreduce, PeerCopySmallBuffersDirectPath) {
  for (int p = 1; p <= 5; ++p) {
    checkWorld(p, Setting{kDefaultRingSegmentBytes, kDefaultRingInflight, true, ~size_t{0}, 1 << 20, true});
  }
}

TEST(RingAllreduce, PeerCopyOffInTheOptionsSendsTheData) {
  // The communicator allows it but the options say no: the data itself travels, nothing is read from peers.
  ThreadWorld world(3, std::chrono::seconds(30), true);
  world.peer_memory = true;
  world.run([](ThreadP2P& comm) {
    comm.ring_options.peer_copy = false;
    comm.ring_options.segment_bytes = 64;
    testing::checkRingCases(comm, [&](Buffer buffer, ReduceOp op) { comm.allreduce(buffer, op); }, 500);
  });
  EXPECT_EQ(world.peer_reads.load(), 0);
}

TEST(RingAllreduce, AverageOfFloat16RoundsToNearestEven) {
  // 1 + 2^-10 is the half right after 1; (1 + (1 + 2^-10)) / 2 lies halfway and rounds to even (1.0).
  ThreadWorld world(2);
  for (size_t direct : {size_t{0}, size_t{1} << 20}) world.run([direct](ThreadP2P& comm) {
    comm.ring_options.direct_max_bytes = direct;
    uint16_t h = floatToHalf(comm.rank() == 0 ? 1.0f : 1.0f + 0x1.0p-10f);
    comm.allreduce(Buffer{&h, 1, DataType::kFloat16}, ReduceOp::kAverage);
    EXPECT_EQ(halfToFloat(h), 1.0f);
  });
}

TEST(RingAllreduce, MissingPeerTimesOutNamingIt) {
  for (size_t direct : {size_t{0}, size_t{1} << 20}) {
  ThreadWorld world(2, std::chrono::milliseconds(300));
  try {
    world.run([direct](ThreadP2P& comm) {
      if (comm.rank() == 1) return;  // never joins
      comm.ring_options.direct_max_bytes = direct;
      std::vector<float> data(1000, 1.0f);
      comm.allreduce(Buffer{data.data(), data.size(), DataType::kFloat32}, ReduceOp::kSum);
    });
    FAIL() << "expected a TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("receive from rank 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ring allreduce"), std::string::npos) << e.what();
  }
  }
}

TEST(RingAllreduce, MismatchedSizesFailInsteadOfHanging) {
  ThreadWorld world(2, std::chrono::seconds(2));
  EXPECT_THROW(world.run([](ThreadP2P& comm) {
                 std::vector<float> data(comm.rank() == 0 ? 10 : 12, 1.0f);
                 comm.allreduce(Buffer{data.data(), data.size(), DataType::kFloat32}, ReduceOp::kSum);
               }),
               CommError);
}

TEST(ReduceKernels, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(floatToHalf(65520.0f), 0x7C00);  // rounds up to inf
  EXPECT_EQ(floatToHalf(1.0f + 0x1.0p-11f), 0x3C00);                // tie -> even
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1.0p-11f), 0x3C02);            // tie -> even (up)
  EXPECT_EQ(floatToHalf(0x1.0p-24f), 0x0001);                       // smallest subnormal
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(NAN))));
  EXPECT_EQ(floatToBFloat16(1.0f + 0x1.0p-8f), 0x3F80);             // tie -> even
  EXPECT_EQ(floatToBFloat16(1.0f + 3 * 0x1.0p-8f), 0x3F82);
  EXPECT_TRUE(std::isnan(bfloat16ToFloat(floatToBFloat16(NAN))));
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // every finite positive half survives the round trip
    ASSERT_EQ(floatToHalf(halfToFloat(static_cast<uint16_t>(h))), h);
  }
}

}  // namespace
}  // namespace ringtrain::comm
