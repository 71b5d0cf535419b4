// ExitOnSignal: a signal while it is armed ends the process with the code and words asked for; once it is
// gone, a signal stays pending for whoever takes signals next.
#include "core/exit_on_signal.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <string>
#include <thread>

namespace ringtrain {
namespace {

sigset_t blockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// In a death test's child: a guard armed, a signal sent to the process, then a wait it must not outlive.
void signalWhileGuarded(int sig, int exit_code) {
  const sigset_t signals = blockStopSignals();
  const ExitOnSignal guard(signals, [](int s) { return "stopping, signal " + std::to_string(s); }, exit_code);
  ::kill(::getpid(), sig);
  std::this_thread::sleep_for(std::chrono::seconds(30));  // the work the signal must not wait for
}

TEST(ExitOnSignalDeathTest, ASignalWhileArmedExitsWith128PlusItsNumber) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(signalWhileGuarded(SIGTERM, ExitOnSignal::kSignalExitCode), ::testing::ExitedWithCode(128 + SIGTERM),
              "ringtrain: stopping, signal 15\n");
  EXPECT_EXIT(signalWhileGuarded(SIGINT, ExitOnSignal::kSignalExitCode), ::testing::ExitedWithCode(128 + SIGINT),
              "ringtrain: stopping, signal 2\n");
}

TEST(ExitOnSignalDeathTest, ASignalWhileArmedExitsWithTheCodeAskedFor) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(signalWhileGuarded(SIGTERM, 0), ::testing::ExitedWithCode(0), "stopping, signal 15");
}

TEST(ExitOnSignalTest, OnceDisarmedASignalStaysPendingForTheNextTaker) {
  // Here, not in a child: the signal is blocked throughout and taken back below, so this process lives on.
  const sigset_t signals = blockStopSignals();
  { const ExitOnSignal guard(signals, [](int) { return std::string("must not be said"); }, 3); }
  ASSERT_EQ(::kill(::getpid(), SIGTERM), 0);
  const timespec wait{5, 0};
  EXPECT_EQ(sigtimedwait(&signals, nullptr, &wait), SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
}

}  // namespace
}  // namespace ringtrain
