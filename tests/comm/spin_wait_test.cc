// How long the communicator's waits poll before they sleep: comm.spin_us as given, the auto choice by the
// CPUs the host gives each rank, and spinUntil's own contract (true as soon as ready, false at its budget).
#include "comm/spin_wait.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <cstdlib>
#include <string>

#include <atomic>
#include <climits>
#include <chrono>
#include <thread>

namespace ringtrain::comm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(SpinWait, AGivenSpinIsTakenAsIs) {
  EXPECT_EQ(chooseSpin(0, 8), 0ns);
  EXPECT_EQ(chooseSpin(1234, 0), 1234us);
  EXPECT_EQ(chooseSpin(1000000, 1000), 1s);
}

TEST(SpinWait, AutoIsLongOnlyWhereEveryRankCanCountOnTwoCpus) {
  const auto kLong = std::chrono::nanoseconds(kLongSpin), kShort = std::chrono::nanoseconds(kShortSpin);
  constexpr int kNoQuota = INT_MAX;
  EXPECT_EQ(chooseSpin(-1, 0), kShort) << "ranks on several hosts";
  EXPECT_EQ(spinForCpus(-1, 0, 16, false, kNoQuota), kShort);
  // Unbound: the allowed CPUs shared by the host's ranks.
  EXPECT_EQ(spinForCpus(-1, 8, 16, false, kNoQuota), kLong);
  EXPECT_EQ(spinForCpus(-1, 9, 16, false, kNoQuota), kShort);
  EXPECT_EQ(spinForCpus(-1, 2, 2, false, kNoQuota), kShort) << "the dev machine: 2 ranks on 2 CPUs";
  EXPECT_EQ(spinForCpus(-1, 1, 2, false, kNoQuota), kLong);
  EXPECT_EQ(spinForCpus(-1, 1, 1, false, kNoQuota), kShort);
  // Bound by ringrun: the rank's own share.
  EXPECT_EQ(spinForCpus(-1, 8, 2, true, kNoQuota), kLong);
  EXPECT_EQ(spinForCpus(-1, 16, 1, true, kNoQuota), kShort);
  // A CPU quota (docker --cpus) below two CPUs per rank keeps it short, whatever the affinity.
  EXPECT_EQ(spinForCpus(-1, 8, 16, false, 2), kShort);
  EXPECT_EQ(spinForCpus(-1, 8, 2, true, 8), kShort);
  EXPECT_EQ(spinForCpus(-1, 8, 16, false, 16), kLong);
  // A given value wins.
  EXPECT_EQ(spinForCpus(0, 8, 16, false, kNoQuota), 0ns);
  EXPECT_EQ(spinForCpus(300, 1, 1, false, 1), 300us);
}

// ringrun --bind-to cores names a rank's own CPUs in RINGTRAIN_CPUS: they are the rank's alone, unless the
// binding failed (the affinity is then wider than the share).
TEST(SpinWait, AutoCountsRingrunsShareAsTheRanksOwn) {
  cpu_set_t mine;
  CPU_ZERO(&mine);
  ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
  const int allowed = CPU_COUNT(&mine);
  if (allowed < 2) GTEST_SKIP() << "needs two CPUs for this process";
  const int ranks = allowed;  // unbound, one CPU each: short
  ASSERT_EQ(unsetenv("RINGTRAIN_CPUS"), 0);
  const auto unbound = chooseSpin(-1, ranks);
  ASSERT_EQ(setenv("RINGTRAIN_CPUS", ("0-" + std::to_string(allowed - 1)).c_str(), 1), 0);
  const auto bound = chooseSpin(-1, ranks);
  ASSERT_EQ(setenv("RINGTRAIN_CPUS", "0", 1), 0);
  const auto failed_binding = chooseSpin(-1, ranks);
  ASSERT_EQ(unsetenv("RINGTRAIN_CPUS"), 0);
  EXPECT_EQ(unbound, std::chrono::nanoseconds(kShortSpin));
  EXPECT_EQ(failed_binding, std::chrono::nanoseconds(kShortSpin));
  if (cpuQuotaOfThisProcess() / ranks < 2) GTEST_SKIP() << "this process's CPU quota leaves no rank two CPUs";
  EXPECT_EQ(bound, std::chrono::nanoseconds(kLongSpin));
}

TEST(SpinWait, APollNeverOutlastsItsWait) {
  EXPECT_EQ(pollBudget(20ms, std::chrono::milliseconds::max()), 20ms) << "no overflow near the largest timeout";
  EXPECT_EQ(pollBudget(20ms, 5ms), 5ms);
  EXPECT_EQ(pollBudget(20ms, 20ms), 20ms);
  EXPECT_EQ(pollBudget(1500us, 1ms), 1ms);
  EXPECT_EQ(pollBudget(20ms, 0ms), 0ns);
  EXPECT_EQ(pollBudget(0ns, 1s), 0ns);
}

TEST(SpinWait, SpinUntilReturnsOnceReadyAndGivesUpAtItsBudget) {
  EXPECT_TRUE(spinUntil([] { return true; }, 0ns));
  EXPECT_FALSE(spinUntil([] { return false; }, 0ns));

  auto start = Clock::now();
  EXPECT_FALSE(spinUntil([] { return false; }, 20ms));
  const auto gave_up = Clock::now() - start;
  EXPECT_GE(gave_up, 20ms);
  EXPECT_LT(gave_up, 2s);

  std::atomic<bool> flag{false};
  std::thread setter([&] {
    std::this_thread::sleep_for(5ms);
    flag = true;
  });
  start = Clock::now();
  EXPECT_TRUE(spinUntil([&] { return flag.load(); }, 10s));
  EXPECT_LT(Clock::now() - start, 5s) << "polled on past the moment it was ready";
  setter.join();
}

}  // namespace
}  // namespace ringtrain::comm
