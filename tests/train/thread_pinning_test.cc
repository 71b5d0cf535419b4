// run.pin_threads: the training thread alone on one of the rank's CPUs, the process's other threads on the rest.
#include "train/thread_pinning.h"

#include <sched.h>
#include <sys/types.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/cpu_list.h"

namespace ringtrain::train {
namespace {

using ::testing::HasSubstr;

std::vector<int> cpusOf(pid_t tid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(tid, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

// Gives every thread of this process `cpus` again: the tests that follow run in the same process.
void restoreAll(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const int cpu : cpus) CPU_SET(cpu, &set);
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    ::sched_setaffinity(static_cast<pid_t>(std::atoi(task.path().filename().c_str())), sizeof(set), &set);
  }
}

// A thread that waits until told, its tid known.
class Sleeper {
 public:
  Sleeper() : thread_([this] {
    tid_ = static_cast<pid_t>(::gettid());
    while (!stop_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }) {
    while (tid_ == 0) std::this_thread::yield();
  }
  ~Sleeper() {
    stop_ = true;
    thread_.join();
  }
  pid_t tid() const { return tid_; }

 private:
  std::atomic<pid_t> tid_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Sets an environment variable for a test's length.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(ThreadPinning, AllowedCpusAreThisProcesssAffinityAscending) {
  const std::vector<int> cpus = allowedCpus();
  ASSERT_FALSE(cpus.empty());
  EXPECT_TRUE(std::is_sorted(cpus.begin(), cpus.end()));
  EXPECT_EQ(cpus, cpusOf(0));
}

TEST(ThreadPinning, TheCallerGoesAloneOnItsCpuAndEveryOtherThreadOnTheRest) {
  const std::vector<int> cpus = allowedCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  const std::vector<int> rest(cpus.begin() + 1, cpus.end());
  {
    Sleeper other;
    const int moved = pinThreads(cpus.front(), rest);
    EXPECT_GE(moved, 1);
    EXPECT_EQ(cpusOf(0), std::vector<int>{cpus.front()});
    EXPECT_EQ(cpusOf(other.tid()), rest);
  }
  restoreAll(cpus);
  EXPECT_EQ(cpusOf(0), cpus);
}

TEST(ThreadPinning, OffUnlessAskedAndBoundToTwoCpusOfItsOwn) {
  EXPECT_FALSE(ThreadPinning(false, 1).enabled());
  EXPECT_EQ(ThreadPinning(false, 1).whyOff(), "");
  EXPECT_EQ(ThreadPinning(false, 1).sweep(), "");
  {
    ScopedEnv unbound("RINGTRAIN_CPUS", std::nullopt);  // not started by ringrun --bind-to cores
    const ThreadPinning pinning(true, 2);
    EXPECT_FALSE(pinning.enabled());
    EXPECT_THAT(pinning.whyOff(), HasSubstr("not bound to CPUs of its own"));
    EXPECT_THAT(pinning.whyOff(), HasSubstr("ringrun --bind-to cores"));
  }
  const std::vector<int> cpus = allowedCpus();
  const std::string share = cpus.size() == 1 ? std::to_string(cpus.front())
                                             : std::to_string(cpus.front()) + "-" + std::to_string(cpus.back());
  if (cpus.size() < 2 || cpus.back() - cpus.front() + 1 != static_cast<int>(cpus.size())) {
    GTEST_SKIP() << "needs a run of two or more CPUs";
  }
  ScopedEnv bound("RINGTRAIN_CPUS", share);  // as ringrun gives a lone rank all of them
  ThreadPinning pinning(true, 1);
  ASSERT_TRUE(pinning.enabled()) << pinning.whyOff();
  {
    Sleeper other;
    EXPECT_THAT(pinning.sweep(), HasSubstr("training thread on CPU " + std::to_string(cpus.front()) + ", "));
    EXPECT_EQ(cpusOf(other.tid()), std::vector<int>(cpus.begin() + 1, cpus.end()));
  }
  restoreAll(cpus);
}

}  // namespace
}  // namespace ringtrain::train
