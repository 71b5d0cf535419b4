// What a process of this machine is doing, for diagnoses (the launcher's, a timed-out collective's).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace ringtrain {

// "stopped", "sleeping", "running", "in uninterruptible I/O", ... as /proc/<pid>/stat says; "gone" when
// there is no such process.
std::string processState(pid_t pid);

// True when no process `pid` exists on this machine (kill(pid, 0) says ESRCH); a process of another user
// exists.
bool processGone(pid_t pid);

// True for "stopped" and "stopped by a debugger" (SIGSTOP, Ctrl-Z, a tracer): the process waits for a SIGCONT.
bool isStoppedState(const std::string& state);

// True for the states that explain why a process does not take part: stopped, traced, exited or gone, or in
// uninterruptible I/O (a hung file system, when seen after a collective's timeout).
bool isStuckState(const std::string& state);

// A stopped process and its environment as it started ("NAME=value" each).
struct StoppedProcess {
  pid_t pid = 0;
  std::string state;  // "stopped" or "stopped by a debugger"
  std::vector<std::string> environment;
};

// The children of `parent` on this machine, of this user, stopped (every thread: SIGSTOP, Ctrl-Z, a
// debugger), whose environment holds every one of `entries` ("NAME=value", whole): how a rank finds a
// stopped sibling whose pid it never read (the job's store was stopped first). Only the environments of
// such processes are read: reading another's takes its memory map's lock, which a thread in uninterruptible
// I/O may hold. Never throws (processes that come and go midway are passed over).
std::vector<StoppedProcess> stoppedChildrenWith(pid_t parent, const std::vector<std::string>& entries);

// Under ringrun, what it gave this process: its own pid (every local rank's parent: RINGRUN_PID), the
// job's token and the attempt (RINGTRAIN_RESTART_COUNT). pid 0 outside ringrun.
struct RingrunOfProcess {
  pid_t pid = 0;
  std::string token;
  std::string attempt;
};
RingrunOfProcess ringrunOfThisProcess();

// "this machine's ringrun (pid 42) is stopped" where that ringrun is stuck (isStuckState: on node 0 it
// hosts the job's store), else "". Never throws.
std::string describeStuckRingrun(const RingrunOfProcess& ringrun);

// "rank 1's process (pid 43, this machine) is stopped", ", "-joined, for those of `ranks` that are ringrun's
// stopped children of this job and attempt (stoppedChildrenWith): how a rank names a stopped sibling whose
// address the job's store never gave it. Its token is a secret, but one a user may export for several jobs,
// so the parent is what tells this job's ranks, and a rank's own children (which inherit its environment)
// are not its process. "" outside ringrun. Never throws.
std::string describeStoppedRanks(const RingrunOfProcess& ringrun, const std::vector<int>& ranks);

// This process's PID namespace, as the number /proc/self/ns/pid names ("4026531836"); "" where /proc does
// not say. A pid means the same process only to processes of the same namespace.
std::string pidNamespace();

// Who this process is, machine-wide: "<boot id>/<pid namespace> <pid>". Two processes can look at each other
// through /proc (processState) exactly when the part before the space is the same.
std::string processAddress();

}  // namespace ringtrain
