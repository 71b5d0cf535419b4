// How long the communicator's waits poll before they sleep: comm.spin_us as given, the auto choice by the
// CPUs the host gives each rank, and spinUntil's own contract (true as soon as ready, false at its budget).
#include "comm/spin_wait.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/sysinfo.h>

#include <atomic>
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

TEST(SpinWait, AutoIsShortUnlessEveryRankOnTheHostHasTwoCpus) {
  EXPECT_EQ(chooseSpin(-1, 0), std::chrono::nanoseconds(kShortSpin)) << "ranks on several hosts";
  const int online = get_nprocs();
  EXPECT_EQ(chooseSpin(-1, online / 2 + 1), std::chrono::nanoseconds(kShortSpin))
      << "more ranks than half of " << online << " CPUs";
  cpu_set_t mine;
  CPU_ZERO(&mine);
  ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
  if (online < 2 || CPU_COUNT(&mine) < 2) GTEST_SKIP() << "needs two CPUs for this process";
  EXPECT_EQ(chooseSpin(-1, online / 2), std::chrono::nanoseconds(kLongSpin));
  EXPECT_EQ(chooseSpin(-1, 1), std::chrono::nanoseconds(kLongSpin));
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
