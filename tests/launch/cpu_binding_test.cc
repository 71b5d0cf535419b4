// The slicing behind `ringrun --bind-to cores`, on CPU sets no test machine has (gaps, uneven splits).
#include "cpu_binding.h"

#include <gtest/gtest.h>

#include <vector>

namespace ringtrain::launch {
namespace {

const std::vector<int> kAllowed = {0, 1, 2, 3, 8, 10, 11};

TEST(CpuBinding, SlicesAreContiguousInOrderAndTheFirstOnesTakeTheRemainder) {
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 1, 0), kAllowed);
  // 7 CPUs over 3 ranks: 3, 2, 2.
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 3, 0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 3, 1), (std::vector<int>{3, 8}));
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 3, 2), (std::vector<int>{10, 11}));
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 7, 6), (std::vector<int>{11}));
}

TEST(CpuBinding, MoreRanksThanCpusShareThemOneEachRoundRobin) {
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 9, 0), (std::vector<int>{0}));
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 9, 7), (std::vector<int>{0}));
  EXPECT_EQ(cpusOfLocalRank(kAllowed, 9, 8), (std::vector<int>{1}));
}

TEST(CpuBinding, NothingToSliceOrAnImpossibleRankGivesNoCpus) {
  EXPECT_TRUE(cpusOfLocalRank({}, 2, 0).empty());
  EXPECT_TRUE(cpusOfLocalRank(kAllowed, 3, 3).empty());
  EXPECT_TRUE(cpusOfLocalRank(kAllowed, 0, 0).empty());
}

}  // namespace
}  // namespace ringtrain::launch
