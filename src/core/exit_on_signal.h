// A guard for the phases of a command that wait on work they cannot interrupt (loading a model from a pipe,
// stopping a server that drains requests and a reload): a SIGINT or SIGTERM meanwhile ends the process at
// once, saying so, instead of queueing behind the wait.
#pragma once

#include <signal.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace ringtrain {

class ExitOnSignal {
 public:
  // From construction until destruction, any signal of `signals` (which the caller blocks in every thread:
  // SIGINT and SIGTERM for the commands) makes the process print "ringtrain: " + say(N) to stderr and
  // _Exit with `exit_code`, or with 128 + N (the shell's code for a death by signal N) when it is
  // kSignalExitCode.
  static constexpr int kSignalExitCode = -1;
  ExitOnSignal(const sigset_t& signals, std::function<std::string(int)> say, int exit_code);
  ~ExitOnSignal();
  ExitOnSignal(const ExitOnSignal&) = delete;
  ExitOnSignal& operator=(const ExitOnSignal&) = delete;

 private:
  std::atomic<bool> armed_{true};
  std::thread watcher_;
};

}  // namespace ringtrain
