// Starting the ranks so that none outlives the job.
//
// Each attempt's ranks share one process group, led by a tiny "guardian" process that ringrun forks
// first. The guardian holds the read end of a pipe whose only writer is ringrun; when ringrun goes away
// for any reason, SIGKILL included, the read returns end-of-file and the guardian SIGKILLs the whole
// group - the ranks and anything they started. Each rank also has PR_SET_PDEATHSIG(SIGKILL) as a second
// line of defence. ringrun signals the group (killpg) to stop a job; the guardian ignores SIGINT/SIGTERM
// so that it stays until the end.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/unique_fd.h"

namespace ringtrain::launch {

// How a process ended, from waitpid's status.
struct ExitStatus {
  bool signaled = false;
  int code = 0;    // exit code when !signaled
  int signal = 0;  // terminating signal when signaled
  static ExitStatus fromWaitStatus(int status);
  bool success() const { return !signaled && code == 0; }
  // "exited with code 3" / "killed by SIGKILL (by hand, or by the out-of-memory killer)"
  std::string describe() const;
  // ringrun's own exit code for this failure: the code, or 128 + signal.
  int exitCode() const { return signaled ? 128 + signal : code; }
};

// "SIGTERM" for SIGTERM, "signal 42" for others without a name.
std::string signalName(int sig);

class ProcessGroup {
 public:
  // Forks the guardian; throws Error on failure.
  ProcessGroup();
  ~ProcessGroup();  // release()
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  pid_t id() const { return guardian_; }
  pid_t guardianPid() const { return guardian_; }
  // killpg; harmless when the group is already gone, and nothing after forget().
  void signal(int sig) const;
  // Lets the guardian SIGKILL whatever is left in the group and exit; ringrun reaps it like the ranks.
  void release();
  // True once release() ran: a guardian that ends before that was killed from outside.
  bool released() const { return !lifeline_.valid(); }
  // The guardian and every rank are reaped: the group is empty, and its id may be reused for another
  // process's group, which signal() must then never reach.
  void forget() { guardian_ = -1; }

 private:
  pid_t guardian_ = -1;
  UniqueFd lifeline_;  // write end; the guardian reads the other
};

struct ChildSpec {
  std::string path;               // resolved program
  std::vector<std::string> argv;  // argv[0] is the program as the user wrote it
  std::vector<std::string> env;   // "KEY=VALUE", the whole environment
  std::vector<int> cpus;          // CPUs the child may run on; empty: ringrun's own
};

struct Child {
  pid_t pid = -1;
  UniqueFd out;  // read ends of the child's stdout and stderr
  UniqueFd err;
  UniqueFd exec_report;  // read end of a close-on-exec pipe: errno when the exec failed (execErrorOf)
};

// Forks and execs `spec` in `group`, stdin from /dev/null, stdout and stderr into fresh pipes. When exec
// fails, the child prints why on its stderr, writes errno into `exec_report` and exits with 127 (not found)
// or 126. A binding (`cpus`) the OS refuses is said on the child's stderr, and the child runs unbound.
Child spawnChild(const ChildSpec& spec, const ProcessGroup& group);

// After the child was reaped, from its Child::exec_report: errno of its failed exec (the program could not
// be started), or 0 (it ran: a successful exec closed the pipe unwritten). Never blocks.
int execErrorOf(const UniqueFd& exec_report);

// This process's children not yet reaped (every thread's, from /proc/self/task/*/children): with
// PR_SET_CHILD_SUBREAPER they include the orphans of what it started. Their pids cannot be reused before
// they are reaped, so signalling them is safe. Empty where /proc does not list children.
std::vector<pid_t> unreapedChildren();

}  // namespace ringtrain::launch
