// ringrun's own stdout and stderr. The ranks' lines and ringrun's messages are queued here and written by one
// thread per stream, so a reader that stops reading (a paused pager, Ctrl-S, a stuck log collector) stalls
// that thread only: ringrun goes on reaping ranks, handling signals and enforcing the grace period.
//
// The agent stops reading a rank's pipe while its stream holds kConsoleBacklog bytes (the rank then waits,
// as it would on a plain pipe), except when the job is stopping or the rank has ended; past kConsoleLimit
// the stream drops what it is given and later says how much (--log-dir files keep every byte). A stream
// whose write fails (EPIPE: `| head`) drops what follows, said once on stderr.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include <spdlog/common.h>

namespace ringtrain::launch {

inline constexpr size_t kConsoleBacklog = 4u << 20;
inline constexpr size_t kConsoleLimit = 64u << 20;

class ConsoleStream {
 public:
  // `name` ("stdout") for messages. The writer thread starts with every signal blocked: signals are the
  // agent's to handle (its signalfd), whatever the caller's mask is now.
  ConsoleStream(int fd, const char* name);
  ~ConsoleStream();  // flush(), then joins
  ConsoleStream(const ConsoleStream&) = delete;
  ConsoleStream& operator=(const ConsoleStream&) = delete;

  // Queues `text`; never blocks.
  void write(std::string text);
  // Bytes queued and not yet written.
  size_t backlog() const;
  // Waits until everything queued is written (as long as the reader takes) or the stream is lost.
  void flush();
  // The same for at most `limit`; false when output was still waiting then.
  bool flushFor(std::chrono::milliseconds limit);

 private:
  void run();

  const int fd_;
  const char* name_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<std::string> queue_;  // guarded by mu_
  size_t backlog_ = 0;             // guarded by mu_: bytes in queue_ and in the write under way
  uint64_t dropped_ = 0;           // guarded by mu_: bytes refused past kConsoleLimit, not yet reported
  bool lost_ = false;              // guarded by mu_: a write failed; everything after is dropped
  bool stopping_ = false;          // guarded by mu_
  std::thread thread_;
};

// write(2) until all `n` bytes are out (EINTR retried); false when the file is gone (EPIPE, ENOSPC, ...),
// with errno in `err` when given.
bool writeFully(int fd, const char* data, size_t n, int* err = nullptr);

ConsoleStream& consoleOut();  // fd 1
ConsoleStream& consoleErr();  // fd 2; consoleOut() itself where fds 1 and 2 lead to one file (2>&1)

// A log sink that queues lines on consoleErr(): a thread that logs (the store server's, which every rank
// of the job talks to) never blocks on a stalled reader of ringrun's stderr.
spdlog::sink_ptr consoleLogSink();

// Before the last flush: lets SIGINT/SIGTERM/SIGHUP (not under nohup) end ringrun again (the agent blocks them for its
// signalfd), so that a reader that never reads cannot keep it alive once the ranks are gone. They end it
// with `exit_code`, the job's: the job is over, and a signal during the flush does not change its result.
// Returns whether one was pending (and taken) already.
bool restoreTerminationSignals(int exit_code);

// Whether SIGHUP is ignored here: ringrun started under nohup, which ringrun and its ranks then honour.
// Async-signal-safe (one sigaction query), so a child may ask between fork and exec.
bool hangupIgnored();

}  // namespace ringtrain::launch
