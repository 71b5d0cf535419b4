// How long the communicator's waits poll before they sleep: comm.spin_us as given, the auto choice by the
// CPUs the host gives each rank, and spinUntil's own contract (true as soon as ready, false at its budget).
#include "comm/spin_wait.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
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

// ringrun --bind-to cores names a rank's own CPUs in RINGTRAIN_CPUS: they are the rank's alone where the
// binding took and the host has CPUs for every rank's share; not where the binding failed, nor where the
// variable was left in the environment of ranks that share their CPUs.
TEST(SpinWait, RingrunsShareCountsAsTheRanksOwnOnlyWhereItCanBe) {
  EXPECT_TRUE(countsAsOwnShare(2, "0-1", 8, 16));
  EXPECT_TRUE(countsAsOwnShare(2, "14,15", 8, 16));
  EXPECT_TRUE(countsAsOwnShare(3, "0-2", 5, 16));
  EXPECT_FALSE(countsAsOwnShare(16, "0-1", 8, 16)) << "the binding failed: the affinity is wider";
  EXPECT_FALSE(countsAsOwnShare(2, "0-1", 2, 2)) << "2 ranks cannot each own 2 of 2 CPUs";
  EXPECT_FALSE(countsAsOwnShare(2, "", 8, 16));
  EXPECT_FALSE(countsAsOwnShare(2, "zero-one", 8, 16));
  EXPECT_FALSE(countsAsOwnShare(2, "3-1", 8, 16));

  // Through the environment: a leftover share on ranks that outnumber what it could give keeps it short.
  cpu_set_t mine;
  CPU_ZERO(&mine);
  ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
  const int allowed = CPU_COUNT(&mine);
  ASSERT_EQ(setenv("RINGTRAIN_CPUS", ("0-" + std::to_string(allowed - 1)).c_str(), 1), 0);
  const auto leftover = chooseSpin(-1, allowed + 1);
  ASSERT_EQ(unsetenv("RINGTRAIN_CPUS"), 0);
  EXPECT_EQ(leftover, std::chrono::nanoseconds(kShortSpin));
}

// The cgroup quota in whole CPUs, the smallest on the process's cgroup and those above it, in v2 (cpu.max)
// and v1 (cpu.cfs_quota_us over cpu.cfs_period_us) layouts, built in a scratch directory.
TEST(SpinWait, CpuQuotaIsTheSmallestUpTheCgroupTreeInWholeCpus) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("spin-wait-cgroup-" + std::to_string(getpid()));
  fs::remove_all(root);
  const auto write = [&](const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text << "\n";
  };
  // v2: no limit at the top, 4 CPUs on the slice, 1.5 on the job: 1 whole CPU.
  write(root / "v2/cpu.max", "max 100000");
  write(root / "v2/system.slice/cpu.max", "400000 100000");
  write(root / "v2/system.slice/job.scope/cpu.max", "150000 100000");
  EXPECT_EQ(cpuQuotaOf("0::/system.slice/job.scope\n", (root / "v2").string()), 1);
  // A limit on the parent holds for the child without one.
  write(root / "v2/system.slice/free.scope/cpu.max", "max 100000");
  EXPECT_EQ(cpuQuotaOf("0::/system.slice/free.scope\n", (root / "v2").string()), 4);
  EXPECT_EQ(cpuQuotaOf("0::/\n", (root / "v2").string()), INT_MAX);
  // v1, as the dev machine mounts it (cpu next to other controllers): -1 is no limit.
  write(root / "v1/cpu,cpuacct/docker/c1/cpu.cfs_quota_us", "250000");
  write(root / "v1/cpu,cpuacct/docker/c1/cpu.cfs_period_us", "100000");
  write(root / "v1/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1");
  write(root / "v1/cpu,cpuacct/docker/cpu.cfs_period_us", "100000");
  EXPECT_EQ(cpuQuotaOf("4:memory:/docker/c1\n3:cpu,cpuacct:/docker/c1\n", (root / "v1").string()), 2);
  EXPECT_EQ(cpuQuotaOf("3:cpu,cpuacct:/docker\n", (root / "v1").string()), INT_MAX);
  // Nothing readable: no quota.
  EXPECT_EQ(cpuQuotaOf("", (root / "v1").string()), INT_MAX);
  EXPECT_EQ(cpuQuotaOf("0::/nowhere\n", (root / "none").string()), INT_MAX);
  fs::remove_all(root);
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
