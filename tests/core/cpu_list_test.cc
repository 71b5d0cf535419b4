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

TEST(CpuList, ThisProcessMayRunOnSomeCpus) {
  const std::vector<int> cpus = allowedCpus();
  ASSERT_FALSE(cpus.empty());
  for (size_t i = 1; i < cpus.size(); ++i) EXPECT_LT(cpus[i - 1], cpus[i]);
}

}  // namespace
}  // namespace ringtrain
