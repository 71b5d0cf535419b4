// Runs a program as a child process with a deadline and captures what it printed. Tests of executables
// (the CLI, the launcher, multi-process jobs) use it so that a hang fails the test instead of stalling it.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace ringtrain::testing {

struct CommandResult {
  int exit_code = -1;    // valid when !signaled
  int term_signal = 0;   // the signal that ended it, 0 if it exited
  bool timed_out = false;
  std::string out;
  std::string err;
  bool ok() const { return !timed_out && term_signal == 0 && exit_code == 0; }
};

struct CommandOptions {
  std::chrono::milliseconds timeout{60000};
  std::map<std::string, std::string> env;  // added to (or replacing in) the inherited environment
  std::string cwd;
  std::string stdin_text;
};

// argv[0] is the program (a path or a name on PATH). On timeout the child's whole process group is killed.
CommandResult runCommand(const std::vector<std::string>& argv, const CommandOptions& options = {});

// build/bin/<name>
std::string binPath(const std::string& name);
// <source dir>/<relative>
std::string sourcePath(const std::string& relative);
// A TCP port on 127.0.0.1 that was free a moment ago (bound and released), for stores and launchers
// under test. It lies below the kernel's ephemeral range where it can, so that no other test's
// connections or port-0 listeners take it before the job under test binds it. Throws std::runtime_error when no port can be bound.
int freeLoopbackPort();
// A fresh empty directory under the system temp dir, removed by the caller (or left for inspection).
std::string makeTempDir(const std::string& prefix);
// The largest world size the multi-process tests start: RINGTRAIN_TEST_MAX_RANKS (1..64), or 4 (this
// machine's 2 cores oversubscribed twice). scripts/gpu-check.sh sets 8 on the device machine's 16 cores.
int maxTestRanks();

}  // namespace ringtrain::testing
