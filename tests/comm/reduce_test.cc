#include "ringtrain/comm/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "comm/communicator_base.h"

namespace ringtrain::comm {
namespace {

TEST(Reduce, HalfRoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = halfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(f))));
      continue;
    }
    ASSERT_EQ(floatToHalf(f), h) << "half 0x" << std::hex << h << " = " << f;
  }
}

TEST(Reduce, HalfRoundsToNearestEven) {
  EXPECT_EQ(halfToFloat(floatToHalf(1.0f + 1.0f / 2048)), 1.0f);  // tie between 1 and 1+2^-10: even (1)
  EXPECT_EQ(halfToFloat(floatToHalf(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);
  EXPECT_EQ(halfToFloat(floatToHalf(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(halfToFloat(floatToHalf(65520.0f))));
  EXPECT_EQ(halfToFloat(floatToHalf(std::ldexp(1.0f, -24))), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(halfToFloat(floatToHalf(std::ldexp(1.0f, -25))), 0.0f);                   // tie to even: 0
  EXPECT_EQ(halfToFloat(floatToHalf(std::ldexp(3.0f, -26))), std::ldexp(1.0f, -24));
}

TEST(Reduce, BFloat16RoundTripsAndRounds) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bfloat16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(floatToBFloat16(f), b);
  }
  EXPECT_EQ(bfloat16ToFloat(floatToBFloat16(1.0f + 1.0f / 256)), 1.0f);  // tie: even
  EXPECT_EQ(bfloat16ToFloat(floatToBFloat16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
  EXPECT_TRUE(std::isnan(bfloat16ToFloat(floatToBFloat16(std::nanf("")))));
}

TEST(Reduce, OpsAndAverage) {
  float a[3] = {1, 5, -2}, b[3] = {4, 2, -3};
  float out[3];
  reduceTo(out, a, b, 3, DataType::kFloat32, ReduceOp::kMax);
  EXPECT_EQ(out[0], 4);
  EXPECT_EQ(out[1], 5);
  EXPECT_EQ(out[2], -2);
  reduceTo(out, a, b, 3, DataType::kFloat32, ReduceOp::kMin);
  EXPECT_EQ(out[2], -3);
  int64_t x[2] = {7, -7}, y[2] = {2, 2};
  reduceInto(x, y, 2, DataType::kInt64, ReduceOp::kAverage);
  finishAverage(x, 2, DataType::kInt64, 2);
  EXPECT_EQ(x[0], 4);
  EXPECT_EQ(x[1], -2);
  uint16_t h[1] = {floatToHalf(3.0f)};
  finishAverage(h, 1, DataType::kFloat16, 4);
  EXPECT_EQ(halfToFloat(h[0]), 0.75f);
}

TEST(CollectiveDescriptor, DisagreementNamesTheFirstOddRank) {
  CollectiveDescriptor a;
  a.sequence = 7;
  a.kind = OpKind::kAllreduce;
  a.count = 1024;
  a.dtype = DataType::kFloat32;
  CollectiveDescriptor b = a;
  EXPECT_EQ(findDisagreement({a, b, a}), "");
  b.kind = OpKind::kBroadcast;
  b.root = 0;
  EXPECT_EQ(findDisagreement({a, a, b}),
            "collective mismatch: rank 2 called broadcast(float32, 1024 elements, root 0) as collective #7 but rank 0 "
            "called allreduce(float32, 1024 elements, sum) as collective #7 (every rank must issue the same "
            "collectives in the same order)");
  b = a;
  b.op = ReduceOp::kMax;
  EXPECT_NE(findDisagreement({a, b}), "");
}

}  // namespace
}  // namespace ringtrain::comm
