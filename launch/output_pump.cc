#include "output_pump.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "ringtrain/core/error.h"

namespace ringtrain::launch {

std::string_view drawnLast(std::string_view line) {
  if (line.find('\r') == std::string_view::npos) return line;
  std::string_view fallback;  // the last non-empty part, for a line whose parts are all blank
  for (size_t end = line.size();;) {
    const size_t cr = end == 0 ? std::string_view::npos : line.rfind('\r', end - 1);
    const size_t begin = cr == std::string_view::npos ? 0 : cr + 1;
    const std::string_view part = line.substr(begin, end - begin);
    // A drawing of spaces is a cleared one (a bar that erases itself): what was drawn before it stays shown.
    if (part.find_first_not_of(" \t") != std::string_view::npos) return part;
    if (fallback.empty()) fallback = part;
    if (cr == std::string_view::npos) return fallback;
    end = cr;
  }
}

size_t utf8PieceLength(std::string_view text, size_t limit) {
  if (text.size() <= limit) return text.size();
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  size_t cut = limit;  // text[cut] starts the next piece: back over continuation bytes (10xxxxxx) to their lead
  while (cut + 3 > limit && cut > 1 && (byte(cut) & 0xC0) == 0x80) --cut;
  const unsigned char lead = byte(cut);
  const size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  // Cut before the lead only where its character runs past the limit; anything else is not UTF-8 there.
  return cut < limit && (lead & 0xC0) == 0xC0 && cut + length > limit ? cut : limit;
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
    const char* part_end = nl == nullptr ? end : nl;
    const bool has_cr = std::memchr(data, '\r', static_cast<size_t>(part_end - data)) != nullptr;
    partial_.append(data, part_end);
    if (has_cr) {
      redrawn_ = true;
      // Only the last drawing before the last '\r' can still show, and the one after it: a bar redrawn at
      // megabytes a second neither grows the held line nor reaches the 1 MiB cut.
      const size_t cr = partial_.rfind('\r');
      if (cr > 0) partial_ = std::string(drawnLast(std::string_view(partial_).substr(0, cr))) + partial_.substr(cr);
    }
    // Pieces of about kMaxLineBytes go out while more than that is held of the drawing under way (the text
    // after the last '\r'; all of a line without one): the drawing before it is bounded by the cuts that came
    // before its '\r', and no longer shows once these pieces of the one that overwrites it go out. A line is
    // cut only past the limit: one of exactly kMaxLineBytes is one piece, sent at its '\n'.
    const size_t last_cr = redrawn_ ? partial_.rfind('\r') : std::string::npos;
    const size_t drawing = last_cr == std::string::npos ? 0 : last_cr + 1;
    if (partial_.size() - drawing > kMaxLineBytes) {
      partial_.erase(0, drawing);
      size_t at = 0;
      while (partial_.size() - at > kMaxLineBytes) {
        const size_t piece = utf8PieceLength(std::string_view(partial_).substr(at), kMaxLineBytes);
        emit(std::string_view(partial_).substr(at, piece), false, false);
        at += piece;
        start_sent_ = true;
      }
      partial_.erase(0, at);
    }
    if (nl == nullptr) {
      partial_fed_ = now;
      showProgress(now);
      return;
    }
    // A line whose start went out alone and whose rest shows nothing (only its '\n') adds no empty line.
    emit(partial_, start_sent_, false);
    endLine();
    data = nl + 1;
  }
}

void OutputPump::showProgress(std::chrono::steady_clock::time_point now) {
  if (redrawn_ && !partial_.empty() && now - shown_at_ >= kProgressEvery) sendHeld(now);
}

void OutputPump::sendHeld(std::chrono::steady_clock::time_point now) {
  if (emit(partial_, true, redrawn_)) start_sent_ = true;  // a redrawn line's drawing: its tail entry is replaced
  partial_.clear();
  shown_at_ = now;
}

void OutputPump::finish() {
  if (!partial_.empty()) emit(partial_, true, false);
  endLine();
}

std::optional<std::chrono::steady_clock::time_point> OutputPump::partialDue() const {
  if (partial_.empty()) return std::nullopt;
  return partial_fed_ + kPartialLineHold;
}

void OutputPump::flushPartial(std::chrono::steady_clock::time_point now) {
  const auto due = partialDue();
  if (due && now >= *due) sendHeld(now);
}

void OutputPump::endLine() {
  partial_.clear();
  start_sent_ = false;
  redrawn_ = false;
  tail_holds_snapshot_ = false;
}

bool OutputPump::emit(std::string_view line, bool skip_blank, bool snapshot) {
  const std::string_view shown = drawnLast(line);
  if (skip_blank && shown.empty()) return false;
  // A drawing held whole (one over kMaxLineBytes that a '\r' ended) still goes out in pieces of the limit.
  size_t at = 0;
  do {
    const size_t piece = utf8PieceLength(shown.substr(at), kMaxLineBytes);
    std::string out;
    out.reserve(prefix_.size() + piece + 1);
    out += prefix_;
    out += shown.substr(at, piece);
    out += '\n';
    dest_.write(std::move(out));
    at += piece;
  } while (at < shown.size());
  constexpr size_t kTailLineBytes = 2000;  // the failure report quotes lines, not megabytes
  std::string quoted(shown.substr(0, utf8PieceLength(shown, kTailLineBytes)));
  if (quoted.size() < shown.size()) quoted += "...";
  // A redrawn line keeps one entry in the tail, its latest drawing: the report's lines are not all one bar's.
  // (If the rank's other stream added a line since, the entry is no longer the last, and a new one starts.)
  if (tail_holds_snapshot_ && !tail_->empty() && tail_->back() == tail_snapshot_) {
    tail_->back() = quoted;
  } else {
    tail_->push_back(quoted);
  }
  tail_holds_snapshot_ = snapshot;
  if (snapshot) tail_snapshot_ = std::move(quoted);
  if (tail_->size() > kTailLines) tail_->pop_front();
  return true;
}

}  // namespace ringtrain::launch
