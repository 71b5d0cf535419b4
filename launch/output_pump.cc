#include "output_pump.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ringtrain/core/error.h"

namespace ringtrain::launch {

OutputPump::OutputPump(int rank, ConsoleStream& dest, const std::string& log_path, Tail* tail)
    : prefix_("[rank " + std::to_string(rank) + "] "), dest_(dest), tail_(tail) {
  if (!log_path.empty()) {
    log_path_ = log_path;
    log_.reset(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    // As for a write that fails later (a full disk): the job goes on, its output to the terminal only.
    if (!log_.valid()) {
      consoleErr().write("ringrun: cannot create " + log_path + " (" + std::strerror(errno) +
                         "): this rank's output is not copied there\n");
    }
  }
}

void OutputPump::feed(const char* data, size_t n) {
  // The bytes as they came: no prefix, no added line ends. A log that cannot be written (disk full) must not
  // stop the job: said once, and the rank's output goes on to the terminal only.
  int err = 0;
  if (log_.valid() && !writeFully(log_.get(), data, n, &err)) {
    consoleErr().write("ringrun: cannot write " + log_path_ + " (" + std::strerror(err) +
                       "): this rank's output is no longer copied there\n");
    log_.reset();
  }
  const char* end = data + n;
  while (data < end) {
    const char* nl = static_cast<const char*>(std::memchr(data, '\n', static_cast<size_t>(end - data)));
    partial_.append(data, nl == nullptr ? end : nl);
    // Pieces of kMaxLineBytes go out while more than that is held. A line is cut only past the limit: one of
    // exactly kMaxLineBytes is one piece, sent at its '\n'.
    size_t at = 0;
    while (partial_.size() - at > kMaxLineBytes) {
      emit(partial_.substr(at, kMaxLineBytes));
      at += kMaxLineBytes;
    }
    partial_.erase(0, at);
    if (nl == nullptr) {
      partial_fed_ = std::chrono::steady_clock::now();
      return;
    }
    // A line whose start went out alone (flushPartial) and whose rest is only its '\n' adds no empty line.
    if (!(partial_.empty() && start_sent_)) emit(partial_);
    start_sent_ = false;
    partial_.clear();
    data = nl + 1;
  }
}

void OutputPump::finish() {
  if (!partial_.empty()) emit(partial_);
  partial_.clear();
}

std::optional<std::chrono::steady_clock::time_point> OutputPump::partialDue() const {
  if (partial_.empty()) return std::nullopt;
  return partial_fed_ + kPartialLineHold;
}

void OutputPump::flushPartial(std::chrono::steady_clock::time_point now) {
  const auto due = partialDue();
  if (!due || now < *due) return;
  emit(partial_);
  partial_.clear();
  start_sent_ = true;
}

void OutputPump::emit(const std::string& line) {
  std::string out;
  out.reserve(prefix_.size() + line.size() + 1);
  out += prefix_;
  out += line;
  out += '\n';
  dest_.write(std::move(out));
  constexpr size_t kTailLineBytes = 2000;  // the failure report quotes lines, not megabytes
  tail_->push_back(line.size() <= kTailLineBytes ? line : line.substr(0, kTailLineBytes) + "...");
  if (tail_->size() > kTailLines) tail_->pop_front();
}

}  // namespace ringtrain::launch
