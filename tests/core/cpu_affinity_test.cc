// Thread CPU masks and the split of a rank's CPUs between its compute thread and the threads serving it.
#include "ringtrain/core/cpu_affinity.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace ringtrain::core {
namespace {

TEST(CpuAffinity, ListsRunsOfCpusTheWayTasksetReadsThem) {
  EXPECT_EQ(cpuListText({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(cpuListText({5}), "5");
  EXPECT_EQ(cpuListText({}), "");
}

TEST(CpuAffinity, ThisThreadMayRunOnSomeCpusInOrder) {
  const std::vector<int> cpus = threadCpus();
  ASSERT_FALSE(cpus.empty());
  for (size_t i = 1; i < cpus.size(); ++i) EXPECT_LT(cpus[i - 1], cpus[i]);
}

TEST(CpuAffinity, TheComputeThreadsTakeTheFirstCpusAndTheRestServeThem) {
  const std::optional<CpuSplit> one = splitCpus({4, 5, 9}, 1);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->compute, (std::vector<int>{4}));
  EXPECT_EQ(one->auxiliary, (std::vector<int>{5, 9}));
  const std::optional<CpuSplit> two = splitCpus({4, 5, 9}, 2);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->compute, (std::vector<int>{4, 5}));
  EXPECT_EQ(two->auxiliary, (std::vector<int>{9}));
  // No CPU left over for the helpers: nothing to split.
  EXPECT_FALSE(splitCpus({4, 5, 9}, 3).has_value());
  EXPECT_FALSE(splitCpus({4}, 1).has_value());
  EXPECT_FALSE(splitCpus({}, 1).has_value());
  EXPECT_FALSE(splitCpus({4, 5}, 0).has_value());
}

// Runs `body` on a thread of its own, so that the test's masks never outlive it.
template <typename Body>
void onFreshThread(Body body) {
  std::thread t(body);
  t.join();
}

TEST(CpuAffinity, AThreadCanBeMovedOntoSomeOfItsCpusAndBack) {
  onFreshThread([] {
    const std::vector<int> all = threadCpus();
    ASSERT_FALSE(all.empty());
    ASSERT_TRUE(setThreadCpus({all.back()}));
    EXPECT_EQ(threadCpus(), (std::vector<int>{all.back()}));
    ASSERT_TRUE(setThreadCpus(all));
    EXPECT_EQ(threadCpus(), all);
    EXPECT_FALSE(setThreadCpus({}));
    EXPECT_EQ(threadCpus(), all);
  });
}

TEST(CpuAffinity, ThreadsStartedOnTheComputeCpuMoveToTheAuxiliaryOnes) {
  onFreshThread([] {
    const std::vector<int> all = threadCpus();
    if (all.size() < 2) GTEST_SKIP() << "needs 2 CPUs to split";
    const std::optional<CpuSplit> split = splitCpus(all, 1);
    ASSERT_TRUE(split.has_value());
    setAuxiliaryCpus(split->auxiliary);
    ASSERT_TRUE(setThreadCpus(split->compute));  // as the trainer's compute thread is during the loop
    std::vector<int> inherited, moved;
    onFreshThread([&] {
      inherited = threadCpus();
      moveToAuxiliaryCpus();
      moved = threadCpus();
    });
    setAuxiliaryCpus({});
    EXPECT_EQ(inherited, split->compute) << "a new thread starts where its creator runs";
    EXPECT_EQ(moved, split->auxiliary);
    EXPECT_TRUE(auxiliaryCpus().empty());
    // Unset, moving does nothing.
    moveToAuxiliaryCpus();
    EXPECT_EQ(threadCpus(), split->compute);
  });
}

}  // namespace
}  // namespace ringtrain::core
