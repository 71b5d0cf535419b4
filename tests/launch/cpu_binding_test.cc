// The slicing behind `ringrun --bind-to cores`, on CPU sets no test machine has (gaps, uneven splits).
#include "cpu_binding.h"

#include <gtest/gtest.h>

#include <vector>

#include "ringtrain/core/error.h"

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

TEST(CpuBinding, TheCpusNamedAreSharedOutInTheirOrderWhenRingrunMayUseThem) {
  EXPECT_EQ(cpusToShare({}, kAllowed), kAllowed);
  EXPECT_EQ(cpusToShare({8, 0, 10, 1}, kAllowed), (std::vector<int>{8, 0, 10, 1}));
  EXPECT_EQ(cpusOfLocalRank(cpusToShare({8, 0, 10, 1}, kAllowed), 2, 1), (std::vector<int>{10, 1}));
  try {
    cpusToShare({0, 9}, kAllowed);
    ADD_FAILURE() << "CPU 9 is not allowed";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "--cpus: CPU 9 is not one ringrun may run on (0-3,8,10-11)");
  }
  EXPECT_THROW(cpusToShare({}, {}), ConfigError);
}

TEST(CpuBinding, NothingToSliceOrAnImpossibleRankGivesNoCpus) {
  EXPECT_TRUE(cpusOfLocalRank({}, 2, 0).empty());
  EXPECT_TRUE(cpusOfLocalRank(kAllowed, 3, 3).empty());
  EXPECT_TRUE(cpusOfLocalRank(kAllowed, 0, 0).empty());
}

}  // namespace
}  // namespace ringtrain::launch
