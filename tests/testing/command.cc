#include "testing/command.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace ringtrain::testing {
namespace {

void drain(int fd, std::string& into, bool& open) {
  char buf[65536];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  if (n > 0) {
    into.append(buf, static_cast<size_t>(n));
  } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
    open = false;
  }
}

}  // namespace

CommandResult runCommand(const std::vector<std::string>& argv, const CommandOptions& options) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 || ::pipe2(in_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (options.env.count(key) == 0) env_strings.push_back(entry);
  }
  for (const auto& [k, v] : options.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::setpgid(0, 0);  // its own process group, so a timeout can kill everything it started
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(126);
    ::execvpe(args[0], args.data(), envp.data());
    ::dprintf(2, "exec %s failed: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(in_pipe[0]);
  if (!options.stdin_text.empty()) {
    (void)!::write(in_pipe[1], options.stdin_text.data(), options.stdin_text.size());
  }
  ::close(in_pipe[1]);

  CommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    if (!out_open) fds[0].fd = -1;
    if (!err_open) fds[1].fd = -1;
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 200)));
    if (ready < 0 && errno != EINTR) break;
    if (fds[0].revents) drain(out_pipe[0], result.out, out_open);
    if (fds[1].revents) drain(err_pipe[0], result.err, err_open);
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  // The pipes closed but the child may still run (a grandchild kept them open): keep the deadline.
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    ::usleep(5000);
  }
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

std::string binPath(const std::string& name) { return std::string(RINGTRAIN_BIN_DIR) + "/" + name; }

std::string sourcePath(const std::string& relative) { return std::string(RINGTRAIN_SOURCE_DIR) + "/" + relative; }

int maxTestRanks() {
  const char* text = std::getenv("RINGTRAIN_TEST_MAX_RANKS");
  if (text == nullptr || *text == '\0') return 4;
  char* end = nullptr;
  const long ranks = std::strtol(text, &end, 10);
  if (*end != '\0' || ranks < 1 || ranks > 64) {
    throw std::runtime_error(std::string("RINGTRAIN_TEST_MAX_RANKS must be a whole number in 1..64, got '") + text + "'");
  }
  return static_cast<int>(ranks);
}

namespace {

// The low end of the kernel's ephemeral range: ports from there up are handed out to every unbound
// connect() and every listen on port 0 (Gloo's pairs), so a port picked there can be taken by another
// test's socket before the job under test binds it.
int ephemeralPortFloor() {
  std::FILE* file = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  int low = 32768;
  int high = 0;
  if (file != nullptr) {
    if (std::fscanf(file, "%d %d", &low, &high) != 2) low = 32768;
    std::fclose(file);
  }
  return low;
}

// Binds 127.0.0.1:port (0: the kernel's pick), releases it, and returns the port bound, or 0.
int bindAndRelease(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  return ok ? ntohs(addr.sin_port) : 0;
}

}  // namespace

int freeLoopbackPort() {
  // Below the ephemeral range, only a deliberate bind takes a port. The start is spread by pid and
  // time so that concurrent test processes rarely probe the same port.
  constexpr int kLowest = 10000;
  const int floor = ephemeralPortFloor();
  if (floor - kLowest >= 1000) {
    static std::atomic<unsigned> calls{0};
    const auto now = static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
    const unsigned span = static_cast<unsigned>(floor - kLowest);
    unsigned offset = (static_cast<unsigned>(::getpid()) * 2654435761u + now + calls.fetch_add(1) * 7919u) % span;
    for (int tries = 0; tries < 256; ++tries, offset = (offset + 7919u) % span) {
      if (const int port = bindAndRelease(kLowest + static_cast<int>(offset)); port != 0) return port;
    }
  }
  // No room below the ephemeral range (an unusual kernel setting): take the kernel's pick.
  if (const int port = bindAndRelease(0); port != 0) return port;
  throw std::runtime_error("no free loopback port");
}

std::string makeTempDir(const std::string& prefix) {
  std::string pattern = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : std::string("/tmp")) + "/" +
                        prefix + "XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

}  // namespace ringtrain::testing
