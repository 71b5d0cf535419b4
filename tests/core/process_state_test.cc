// What a process is doing, as the launcher's and a timed-out collective's diagnoses read it.
#include "core/process_state.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace ringtrain {
namespace {

std::string stateWithin(pid_t pid, const std::string& want) {
  std::string state;
  for (int i = 0; i < 300 && (state = processState(pid)) != want; ++i) ::usleep(10000);
  return state;
}

TEST(ProcessState, AChildIsSeenStoppedThenExitedThenGone) {
  EXPECT_EQ(processState(::getpid()), "running");  // reading its own stat
  const pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  EXPECT_EQ(stateWithin(child, "sleeping"), "sleeping");
  ::kill(child, SIGSTOP);
  EXPECT_EQ(stateWithin(child, "stopped"), "stopped");
  ::kill(child, SIGKILL);
  EXPECT_EQ(stateWithin(child, "exited, not yet reaped"), "exited, not yet reaped");
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(processState(child), "gone");
}

TEST(ProcessState, StuckStatesAreThoseThatExplainAnAbsence) {
  for (const char* state : {"stopped", "stopped by a debugger", "exited, not yet reaped", "gone", "in uninterruptible I/O"}) {
    EXPECT_TRUE(isStuckState(state)) << state;
  }
  for (const char* state : {"running", "sleeping"}) EXPECT_FALSE(isStuckState(state)) << state;
  EXPECT_TRUE(isStoppedState("stopped") && isStoppedState("stopped by a debugger"));
  EXPECT_FALSE(isStoppedState("gone") || isStoppedState("in uninterruptible I/O"));
}

TEST(ProcessState, AddressesOfThisProcessShareTheMachinePartAndEndWithItsPid) {
  const std::string address = processAddress();
  const size_t space = address.find(' ');
  ASSERT_NE(space, std::string::npos) << address;
  EXPECT_EQ(address.substr(space + 1), std::to_string(::getpid()));
  EXPECT_NE(address.find("/pid:["), std::string::npos) << address;  // boot id / pid namespace
}

}  // namespace
}  // namespace ringtrain
