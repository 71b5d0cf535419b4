// Turns a rank's stdout/stderr byte stream into whole lines on ringrun's own stdout/stderr (console.h), each
// prefixed "[rank R] " and queued in one piece, so lines of different ranks never interleave mid-line (lines
// over kMaxLineBytes go in pieces of that size, cut between UTF-8 characters, each its own line, and so does
// the start of a line after which the rank writes nothing for kPartialLineHold: a prompt or a progress line is
// seen while the rank waits); optionally copies the bytes, exactly as the rank wrote them, to a log file; and
// keeps the rank's last lines for the failure report.
// A line redrawn with '\r' (a progress bar, CRLF line ends) shows as what the rank drew last (drawnLast):
// passed on raw, each '\r' would send the cursor back over the "[rank R] " prefix and over other ranks' text.
// While such a line is unfinished, what it shows goes out as a line of its own every kProgressEvery, so a
// bar redrawn faster than kPartialLineHold is seen as it moves; the failure report's tail keeps one entry
// for it, its latest drawing. What it shows is what the rank's writes so far drew: a bar that writes each
// drawing in one write (as tqdm, curl and most do) shows whole drawings, "\r<bar>" and "<bar>\r" alike.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "console.h"
#include "core/unique_fd.h"

namespace ringtrain::launch {

inline constexpr size_t kTailLines = 10;
inline constexpr size_t kMaxLineBytes = 1u << 20;  // longer lines are passed on in pieces
// How long the start of a line waits for more of it before it goes out alone (the rest follows as its own line).
inline constexpr std::chrono::milliseconds kPartialLineHold{500};
// How often an unfinished line redrawn with '\r' shows its latest drawing.
inline constexpr std::chrono::milliseconds kProgressEvery{1000};

// What a terminal shows last of a line redrawn with '\r': its last '\r'-separated part with more than spaces
// and tabs in it (a drawing of spaces erases a bar, whose last drawing is what is worth showing); failing
// that, its last non-empty part; "" if none. A line without '\r' is itself.
std::string_view drawnLast(std::string_view line);
// How many bytes of `text` the next piece of at most `limit` bytes takes: `limit`, less the start of a UTF-8
// character that would run past it (up to 3 bytes); all of `limit` where the text is not UTF-8 there.
size_t utf8PieceLength(std::string_view text, size_t limit);

// The last lines a rank printed (both streams, in arrival order).
using Tail = std::deque<std::string>;

class OutputPump {
 public:
  // `log_path` empty for none; one that cannot be created is said on stderr and the pump goes on without
  // it, as after a failed write. `dest` and `tail` must outlive the pump.
  OutputPump(int rank, ConsoleStream& dest, const std::string& log_path, Tail* tail);
  // Feeds bytes read from the rank, which came at `now`; emits every complete line, and the latest drawing of
  // an unfinished line redrawn with '\r' once kProgressEvery has passed since the line began or last showed.
  void feed(const char* data, size_t n, std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // End of stream: emits a last unterminated line.
  void finish();
  // When the unfinished line held now is due to go out alone (kPartialLineHold after its last byte came);
  // nullopt when none is held. The agent's poll wakes by then.
  std::optional<std::chrono::steady_clock::time_point> partialDue() const;
  // Emits the unfinished line if it is due at `now`. Call it only when the pipe was found empty: the rest of
  // the line may be waiting there.
  void flushPartial(std::chrono::steady_clock::time_point now);

 private:
  // Queues `line` (raw bytes of one line, without its '\n') as the console shows it, and quotes it in the
  // tail; false, doing neither, when it shows nothing and `skip_blank`. A `snapshot` (an unfinished redrawn
  // line's drawing) is replaced in the tail by the line's next drawing.
  bool emit(std::string_view line, bool skip_blank, bool snapshot);
  void showProgress(std::chrono::steady_clock::time_point now);
  // Sends what is held of the unfinished line (flushPartial, showProgress) and starts the progress clock.
  void sendHeld(std::chrono::steady_clock::time_point now);
  void endLine();

  std::string prefix_;
  ConsoleStream& dest_;
  UniqueFd log_;
  std::string log_path_;
  Tail* tail_;  // owned by the agent, outlives this pump
  std::string partial_;
  std::chrono::steady_clock::time_point partial_fed_;  // when partial_'s last byte came
  bool start_sent_ = false;  // part of the line under way went out already (a piece, flushPartial, showProgress)
  bool redrawn_ = false;     // the line under way holds a '\r'
  bool tail_holds_snapshot_ = false;  // tail_->back() was this line's latest drawing, tail_snapshot_
  std::string tail_snapshot_;
  std::chrono::steady_clock::time_point shown_at_;  // when the line under way began, or last showed progress
};

}  // namespace ringtrain::launch
