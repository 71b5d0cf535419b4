#include "output_pump.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "ringtrain/core/error.h"

namespace ringtrain::launch {

std::string_view drawnLast(std::string_view line) {
  while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t cr = line.rfind('\r');
  return cr == std::string_view::npos ? line : line.substr(cr + 1);
}

size_t utf8PieceLength(std::string_view text, size_t limit) {
  if (text.size() <= limit) return text.size();
  const auto continues = [&](size_t i) { return (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80; };
  size_t cut = limit;  // text[cut] starts the next piece: back over continuation bytes to their lead byte
  while (cut > limit - 3 && cut > 1 && continues(cut)) --cut;
  return continues(cut) ? limit : cut;
}

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

void OutputPump::feed(const char* data, size_t n, std::chrono::steady_clock::time_point now) {
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
    if (partial_.empty() && !start_sent_) shown_at_ = now;  // a line begins
    const char* nl = static_cast<const char*>(std::memchr(data, '\n', static_cast<size_t>(end - data)));
    partial_.append(data, nl == nullptr ? end : nl);
    // Pieces of about kMaxLineBytes go out while more than that is held. A line is cut only past the limit:
    // one of exactly kMaxLineBytes is one piece, sent at its '\n'.
    size_t at = 0;
    while (partial_.size() - at > kMaxLineBytes) {
      const size_t piece = utf8PieceLength(std::string_view(partial_).substr(at), kMaxLineBytes);
      emit(partial_.substr(at, piece));
      at += piece;
    }
    partial_.erase(0, at);
    if (nl == nullptr) {
      partial_fed_ = now;
      showProgress(now);
      return;
    }
    // A line whose start went out alone and whose rest shows nothing (only its '\n') adds no empty line.
    emit(partial_, start_sent_);
    start_sent_ = false;
    partial_.clear();
    data = nl + 1;
  }
}

void OutputPump::showProgress(std::chrono::steady_clock::time_point now) {
  if (now - shown_at_ < kProgressEvery) return;
  const size_t cr = partial_.rfind('\r');
  if (cr == std::string::npos) return;
  // The last complete drawing goes out; the one under way (after the last '\r') stays held.
  if (emit(partial_.substr(0, cr), true)) start_sent_ = true;
  partial_.erase(0, cr + 1);
  shown_at_ = now;
}

void OutputPump::finish() {
  if (!partial_.empty()) emit(partial_, true);
  partial_.clear();
}

std::optional<std::chrono::steady_clock::time_point> OutputPump::partialDue() const {
  if (partial_.empty()) return std::nullopt;
  return partial_fed_ + kPartialLineHold;
}

void OutputPump::flushPartial(std::chrono::steady_clock::time_point now) {
  const auto due = partialDue();
  if (!due || now < *due) return;
  if (emit(partial_, true)) start_sent_ = true;
  partial_.clear();
  shown_at_ = now;
}

bool OutputPump::emit(const std::string& line, bool skip_blank) {
  const std::string_view shown = drawnLast(line);
  if (skip_blank && shown.empty()) return false;
  std::string out;
  out.reserve(prefix_.size() + shown.size() + 1);
  out += prefix_;
  out += shown;
  out += '\n';
  dest_.write(std::move(out));
  constexpr size_t kTailLineBytes = 2000;  // the failure report quotes lines, not megabytes
  tail_->emplace_back(shown.size() <= kTailLineBytes ? std::string(shown)
                                                      : std::string(shown.substr(0, kTailLineBytes)) + "...");
  if (tail_->size() > kTailLines) tail_->pop_front();
  return true;
}

}  // namespace ringtrain::launch
