// The CPUs a process may run on, and their list as taskset writes it (src/core/cpu_list.h).
#include "core/cpu_list.h"

#include <gtest/gtest.h>

#include <vector>

namespace ringtrain {
namespace {

TEST(CpuList, ListsRunsOfCpusTheWayTasksetReadsThem) {
  EXPECT_EQ(cpuListText({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(cpuListText({5}), "5");
  EXPECT_EQ(cpuListText({}), "");
}

TEST(CpuList, ReadsAListInTheOrderItNamesCpus) {
  EXPECT_EQ(parseCpuList("0-3,8,10-11"), (std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
  EXPECT_EQ(parseCpuList("0,8,1,9"), (std::vector<int>{0, 8, 1, 9}));
  EXPECT_EQ(parseCpuList("5"), (std::vector<int>{5}));
  EXPECT_EQ(parseCpuList(cpuListText({2, 3, 4, 7})), (std::vector<int>{2, 3, 4, 7}));
  for (const char* bad : {"", ",", "1,", ",1", "3-1", "1-", "-1", "a", "1 2", " 1", "1,,2", "1-2-3", "123456"}) {
    EXPECT_EQ(parseCpuList(bad), std::nullopt) << "'" << bad << "'";
  }
}

TEST(CpuList, ThisProcessMayRunOnSomeCpus) {
  const std::vector<int> cpus = allowedCpus();
  ASSERT_FALSE(cpus.empty());
  for (size_t i = 1; i < cpus.size(); ++i) EXPECT_LT(cpus[i - 1], cpus[i]);
}

}  // namespace
}  // namespace ringtrain
