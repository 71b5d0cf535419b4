#include "console.h"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <spdlog/sinks/base_sink.h>

namespace ringtrain::launch {
namespace {

// Coalesces small writes: a queue entry grows up to this size before another is started.
constexpr size_t kChunkBytes = 64u << 10;

}  // namespace

bool writeFully(int fd, const char* data, size_t n, int* err) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (err != nullptr) *err = w < 0 ? errno : EIO;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

ConsoleStream::ConsoleStream(int fd, const char* name) : fd_(fd), name_(name) {
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);  // the thread inherits "everything blocked"
  thread_ = std::thread([this] { run(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

ConsoleStream::~ConsoleStream() {
  flush();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

void ConsoleStream::write(std::string text) {
  if (text.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lost_) return;
    if (backlog_ + text.size() > kConsoleLimit) {
      dropped_ += text.size();
      return;
    }
    backlog_ += text.size();
    if (!queue_.empty() && queue_.back().size() + text.size() <= kChunkBytes) {
      queue_.back() += text;
    } else {
      queue_.push_back(std::move(text));
    }
  }
  work_cv_.notify_one();
}

size_t ConsoleStream::backlog() const {
  std::lock_guard<std::mutex> lock(mu_);
  return backlog_;
}

void ConsoleStream::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return backlog_ == 0 || lost_; });
}

bool ConsoleStream::flushFor(std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, limit, [&] { return backlog_ == 0 || lost_; });
}

void ConsoleStream::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    std::string chunk = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    int err = 0;
    const bool ok = writeFully(fd_, chunk.data(), chunk.size(), &err);
    lock.lock();
    backlog_ -= chunk.size();
    std::string notice;
    if (!ok && !lost_) {
      lost_ = true;
      backlog_ = 0;
      queue_.clear();
      notice = std::string("ringrun: ") + name_ + " is gone (" + std::strerror(err) +
               "): the ranks' output to it is dropped from now on (--log-dir, where given and writable, keeps a copy)\n";
    } else if (dropped_ > 0 && backlog_ < kConsoleBacklog) {
      notice = "ringrun: " + std::to_string(dropped_) + " bytes of the ranks' output to " + name_ +
               " were dropped: its reader did not keep up (--log-dir, where given and writable, keeps every byte)\n";
      dropped_ = 0;
    }
    if (backlog_ == 0 || lost_) idle_cv_.notify_all();
    if (!notice.empty() && fd_ != 2) {
      lock.unlock();
      consoleErr().write(std::move(notice));
      lock.lock();
    } else if (!notice.empty() && !lost_) {
      backlog_ += notice.size();
      queue_.push_front(std::move(notice));
    }
  }
}

namespace {

class ConsoleLogSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    consoleErr().write(std::string(formatted.data(), formatted.size()));
  }
  void flush_() override {}
};

}  // namespace

spdlog::sink_ptr consoleLogSink() { return std::make_shared<ConsoleLogSink>(); }

ConsoleStream& consoleOut() {
  static ConsoleStream stream(1, "stdout");
  return stream;
}

namespace {
// Whether fds 1 and 2 lead to one file (`2>&1` into a pipe, one terminal). Then one writer serves both: two
// threads each writing several lines at once into one pipe could interleave inside a line (a pipe keeps
// only writes of up to PIPE_BUF bytes whole).
bool stdoutIsStderr() {
  struct stat out {}, err {};
  return ::fstat(1, &out) == 0 && ::fstat(2, &err) == 0 && out.st_dev == err.st_dev && out.st_ino == err.st_ino;
}
}  // namespace

ConsoleStream& consoleErr() {
  static const bool shared = stdoutIsStderr();
  if (shared) return consoleOut();
  static ConsoleStream stream(2, "stderr");
  return stream;
}

namespace {
volatile sig_atomic_t g_final_exit_code = 0;
extern "C" void exitWithFinalCode(int) { ::_exit(g_final_exit_code); }
}  // namespace

bool hangupIgnored() {
  struct sigaction current {};
  return ::sigaction(SIGHUP, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

bool restoreTerminationSignals(int exit_code) {
  g_final_exit_code = exit_code;
  struct sigaction action {};
  action.sa_handler = exitWithFinalCode;
  sigemptyset(&action.sa_mask);
  const bool nohup = hangupIgnored();  // started under nohup: a hangup stays ignored to the end
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) {
    if (sig == SIGHUP && nohup) continue;
    ::sigaction(sig, &action, nullptr);
    sigaddset(&set, sig);
  }
  // A signal that came as the job ended (a second Ctrl-C, a scheduler's SIGTERM) is still pending:
  // unblocked, it would end ringrun at once, before the last lines and the exit code it has. The job is
  // over, so it is taken here; one that comes during the flush ends ringrun, with the job's exit code.
  const timespec now{0, 0};
  bool taken = false;
  while (::sigtimedwait(&set, nullptr, &now) > 0) taken = true;
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  return taken;
}

}  // namespace ringtrain::launch
