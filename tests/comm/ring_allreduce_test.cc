#include "ringtrain/comm/ring_allreduce.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "testing/thread_p2p.h"

namespace ringtrain::comm {
namespace {

using testing::ThreadP2P;
using testing::ThreadWorld;

const DataType kTypes[] = {DataType::kFloat32, DataType::kFloat64, DataType::kFloat16, DataType::kBFloat16,
                           DataType::kInt64};
const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin};
const size_t kCounts[] = {0, 1, 2, 3, 5, 7, 13, 64, 1000, 4097, 20011};

// Small integers, exact in every dtype and in every partial sum (|sum| <= 8 * 16).
double valueOf(int rank, size_t i) { return static_cast<double>(static_cast<int>((i * 7 + rank * 3) % 16) - 5); }

void store(void* data, size_t i, DataType type, double v) {
  switch (type) {
    case DataType::kFloat32: static_cast<float*>(data)[i] = static_cast<float>(v); break;
    case DataType::kFloat64: static_cast<double*>(data)[i] = v; break;
    case DataType::kFloat16: static_cast<uint16_t*>(data)[i] = floatToHalf(static_cast<float>(v)); break;
    case DataType::kBFloat16:
      static_cast<uint16_t*>(data)[i] = floatToBFloat16(static_cast<float>(v));
      break;
    case DataType::kInt64: static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v); break;
    default: FAIL();
  }
}

double load(const void* data, size_t i, DataType type) {
  switch (type) {
    case DataType::kFloat32: return static_cast<const float*>(data)[i];
    case DataType::kFloat64: return static_cast<const double*>(data)[i];
    case DataType::kFloat16: return halfToFloat(static_cast<const uint16_t*>(data)[i]);
    case DataType::kBFloat16: return bfloat16ToFloat(static_cast<const uint16_t*>(data)[i]);
    case DataType::kInt64: return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    default: return NAN;
  }
}

// The closed form: what every rank must hold, rounded the way the dtype rounds it.
double expected(size_t i, int ranks, DataType type, ReduceOp op) {
  double sum = 0, mx = -1e9, mn = 1e9;
  for (int r = 0; r < ranks; ++r) {
    sum += valueOf(r, i);
    mx = std::max(mx, valueOf(r, i));
    mn = std::min(mn, valueOf(r, i));
  }
  switch (op) {
    case ReduceOp::kSum: return sum;
    case ReduceOp::kMax: return mx;
    case ReduceOp::kMin: return mn;
    case ReduceOp::kAverage: break;
  }
  switch (type) {
    case DataType::kFloat32: return static_cast<float>(sum) / static_cast<float>(ranks);
    case DataType::kFloat64: return sum / ranks;
    case DataType::kFloat16: return halfToFloat(floatToHalf(static_cast<float>(sum) / ranks));
    case DataType::kBFloat16:
      return bfloat16ToFloat(floatToBFloat16(static_cast<float>(sum) / ranks));
    default: return static_cast<double>(static_cast<int64_t>(sum) / ranks);
  }
}

struct Setting {
  size_t segment_bytes;
  int inflight;
  bool rendezvous;
  size_t max_count = ~size_t{0};  // tiny segments make many messages: keep those runs short
  size_t direct_max_bytes = 0;     // the ring itself unless a test asks for the small-buffer path
};

// Every rank runs every (dtype, op, count) in the same order on its own thread: this also checks that
// scratch reuse between calls of different sizes is sound.
void checkWorld(int ranks, const Setting& setting) {
  SCOPED_TRACE(::testing::Message() << "P=" << ranks << " segment_bytes=" << setting.segment_bytes
                                    << " inflight=" << setting.inflight << " rendezvous=" << setting.rendezvous);
  ThreadWorld world(ranks, std::chrono::seconds(30), setting.rendezvous);
  std::atomic<int> failures{0};
  world.run([&](ThreadP2P& comm) {
    comm.ring_options.segment_bytes = setting.segment_bytes;
    comm.ring_options.inflight = setting.inflight;
    comm.ring_options.direct_max_bytes = setting.direct_max_bytes;
    for (DataType type : kTypes) {
      for (ReduceOp op : kOps) {
        for (size_t n : kCounts) {
          if (n > setting.max_count) continue;
          std::vector<uint8_t> bytes(n * elementSize(type) + 1);
          for (size_t i = 0; i < n; ++i) store(bytes.data(), i, type, valueOf(comm.rank(), i));
          comm.allreduce(Buffer{bytes.data(), n, type}, op);
          for (size_t i = 0; i < n && failures < 20; ++i) {
            const double want = expected(i, ranks, type, op);
            const double got = load(bytes.data(), i, type);
            if (got != want) {
              ADD_FAILURE() << "rank " << comm.rank() << " " << toString(type) << " " << toString(op) << " n=" << n
                            << " element " << i << ": got " << got << ", want " << want;
              ++failures;
            }
          }
        }
      }
    }
  });
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
