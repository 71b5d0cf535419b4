#include "child_process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "ringtrain/core/error.h"

#include "console.h"

namespace ringtrain::launch {
namespace {

// Between fork and exec only async-signal-safe calls: everything is prepared before fork.
void resetSignalsInChild() {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGQUIT}) ::signal(sig, SIG_DFL);
  if (!hangupIgnored()) ::signal(SIGHUP, SIG_DFL);  // under nohup the ranks ignore it too
  // Ignored across exec until a rank installs its own handler (ringtrain train does): a pre-emption notice
  // that ringrun passes on, early in a rank's life or to one that does not care, must not kill it.
  for (int sig : {SIGUSR1, SIGUSR2}) ::signal(sig, SIG_IGN);
}

void writeStr(int fd, const char* s) { (void)!::write(fd, s, std::strlen(s)); }

// errno's description, safe between fork and exec: strerrordesc_np, unlike strerror, neither translates nor
// takes a lock.
const char* describeErrno(int error) {
  const char* text = ::strerrordesc_np(error);
  return text != nullptr ? text : "unknown error";
}

}  // namespace

ExitStatus ExitStatus::fromWaitStatus(int status) {
  ExitStatus s;
  if (WIFSIGNALED(status)) {
    s.signaled = true;
    s.signal = WTERMSIG(status);
  } else {
    s.code = WEXITSTATUS(status);
  }
  return s;
}

std::string signalName(int sig) {
  if (const char* abbrev = ::sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

std::string ExitStatus::describe() const {
  if (!signaled) return "exited with code " + std::to_string(code);
  std::string text = "killed by " + signalName(signal);
  if (signal == SIGKILL) text += " (by hand, or by the out-of-memory killer)";
  if (signal == SIGSEGV || signal == SIGBUS || signal == SIGABRT) text += " (crashed)";
  if (signal == SIGXFSZ) text += " (a file grew past the size limit, ulimit -f)";
  if (signal == SIGXCPU) text += " (out of CPU time, ulimit -t)";
  return text;
}

ProcessGroup::ProcessGroup() {
  int lifeline[2];
  RT_CHECK(::pipe2(lifeline, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
  const pid_t pid = ::fork();
  RT_CHECK(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    // Hold nothing of ringrun's (store sockets, pipes): only the lifeline, as fd 3.
    if (lifeline[0] != 3) ::dup2(lifeline[0], 3);
    ::close_range(4, ~0U, 0);
    lifeline[0] = 3;
    // What ringrun passes to the ranks' group is for the ranks, not for their guardian.
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) ::signal(sig, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    char byte;
    while (::read(lifeline[0], &byte, 1) < 0 && errno == EINTR) {
    }
    ::kill(0, SIGKILL);  // the whole group, this process last
    ::_exit(0);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before the first rank joins it
  ::close(lifeline[0]);
  guardian_ = pid;
  lifeline_.reset(lifeline[1]);
}

ProcessGroup::~ProcessGroup() { release(); }

void ProcessGroup::signal(int sig) const {
  if (guardian_ > 0) ::killpg(guardian_, sig);
}

void ProcessGroup::release() { lifeline_.reset(); }

namespace {

// Why a pipe could not be made, in words a user can act on: running out of descriptors is the usual cause
// (hundreds of ranks under a low `ulimit -n`).
std::string pipeFailure(int error) {
  if (error == EMFILE) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    return detail::concat("cannot start another rank: out of file descriptors (the open-file limit, ulimit -n, is ",
                          limit.rlim_cur, "; ringrun holds 3 per rank, 5 with --log-dir, and 8 while one starts); ",
                          "raise it or start fewer ranks");
  }
  if (error == ENFILE) return "cannot start another rank: the system's table of open files is full (ENFILE)";
  return detail::concat("pipe: ", std::strerror(error));
}

// A pipe's two ends, each closed when it goes out of scope (an error on the way: nothing leaks).
struct Pipe {
  UniqueFd read, write;
  explicit Pipe(int flags) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | flags) != 0) RT_THROW(Error, pipeFailure(errno));
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
};

}  // namespace

std::vector<pid_t> unreapedChildren() {
  std::vector<pid_t> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/self/task", ec), end; !ec && it != end; it.increment(ec)) {
    std::ifstream in(it->path() / "children");
    for (pid_t pid = 0; in >> pid;) out.push_back(pid);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

int execErrorOf(const UniqueFd& exec_report) {
  int error = 0;
  if (!exec_report.valid()) return 0;
  const ssize_t got = ::read(exec_report.get(), &error, sizeof error);
  return got == static_cast<ssize_t>(sizeof error) ? error : 0;
}

Child spawnChild(const ChildSpec& spec, const ProcessGroup& group) {
  Pipe out(0), err(0);
  // Non-blocking: read once the child is reaped (execErrorOf), never waited on: an exec that stalls (a hung
  // file system, a debugger holding the child) must not stall ringrun.
  Pipe report(O_NONBLOCK);
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) {  // the rank would read ringrun's own stdin instead
    const int error = errno;
    RT_THROW(Error, error == EMFILE || error == ENFILE ? pipeFailure(error)
                                                       : detail::concat("/dev/null: ", std::strerror(error)));
  }
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pgid = group.id();
  // The mask is built before fork (CPU_ALLOC allocates); the child only hands it to the kernel.
  const int mask_cpus = spec.cpus.empty() ? 1 : *std::max_element(spec.cpus.begin(), spec.cpus.end()) + 1;
  std::unique_ptr<cpu_set_t, void (*)(cpu_set_t*)> cpus(CPU_ALLOC(mask_cpus), [](cpu_set_t* set) { CPU_FREE(set); });
  RT_CHECK(cpus != nullptr, "CPU_ALLOC of ", mask_cpus, " CPUs failed");
  const size_t mask_bytes = CPU_ALLOC_SIZE(mask_cpus);
  CPU_ZERO_S(mask_bytes, cpus.get());
  for (int c : spec.cpus) {
    if (c >= 0) CPU_SET_S(c, mask_bytes, cpus.get());
  }

  const pid_t pid = ::fork();
  RT_CHECK(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, pgid);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    // ringrun may have died between fork and prctl: then nobody would send the signal.
    if (::getppid() != parent) ::_exit(127);
    resetSignalsInChild();
    ::dup2(devnull.get(), 0);
    ::dup2(out.write.get(), 1);
    ::dup2(err.write.get(), 2);
    // After the dup2s, so that a refusal reaches the rank's own (prefixed, logged) stderr.
    if (!spec.cpus.empty() && ::sched_setaffinity(0, mask_bytes, cpus.get()) != 0) {
      const int error = errno;
      writeStr(2, "ringrun: cannot bind to the CPUs in RINGTRAIN_CPUS, running unbound: ");
      writeStr(2, describeErrno(error));
      writeStr(2, "\n");
    }
    ::execve(spec.path.c_str(), argv.data(), envp.data());
    const int error = errno;
    writeStr(2, "ringrun: cannot run ");
    writeStr(2, spec.path.c_str());
    writeStr(2, ": ");
    writeStr(2, describeErrno(error));
    // The file is there: what is missing is its #! interpreter (or its ELF loader).
    if (error == ENOENT && ::access(spec.path.c_str(), F_OK) == 0) {
      writeStr(2, " (its #! interpreter or ELF loader is missing?)");
    }
    writeStr(2, "\n");
    (void)!::write(report.write.get(), &error, sizeof error);  // a successful exec closes it unwritten instead
    ::_exit(error == ENOENT ? 127 : 126);  // as shells say: not found, or found and not executable
  }
  ::setpgid(pid, pgid);
  Child child;
  child.pid = pid;
  child.out = std::move(out.read);
  child.err = std::move(err.read);
  child.exec_report = std::move(report.read);
  return child;  // the write ends close here: only the child holds them
}

}  // namespace ringtrain::launch
