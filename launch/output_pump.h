// Turns a rank's stdout/stderr byte stream into whole lines on ringrun's own stdout/stderr (console.h), each
// prefixed "[rank R] " and queued in one piece, so lines of different ranks never interleave mid-line (lines
// over kMaxLineBytes go in pieces of that size, each its own line, and so does the start of a line after which
// the rank writes nothing for kPartialLineHold: a prompt or a progress line is seen while the rank waits);
// optionally copies the bytes, exactly as the rank wrote them, to a log file; and keeps the rank's last lines
// for the failure report.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "console.h"
#include "core/unique_fd.h"

namespace ringtrain::launch {

inline constexpr size_t kTailLines = 10;
inline constexpr size_t kMaxLineBytes = 1u << 20;  // longer lines are passed on in pieces
// How long the start of a line waits for more of it before it goes out alone (the rest follows as its own line).
inline constexpr std::chrono::milliseconds kPartialLineHold{500};

// The last lines a rank printed (both streams, in arrival order).
using Tail = std::deque<std::string>;

class OutputPump {
 public:
  // `log_path` empty for none; one that cannot be created is said on stderr and the pump goes on without
  // it, as after a failed write. `dest` and `tail` must outlive the pump.
  OutputPump(int rank, ConsoleStream& dest, const std::string& log_path, Tail* tail);
  // Feeds bytes read from the rank; emits every complete line.
  void feed(const char* data, size_t n);
  // End of stream: emits a last unterminated line.
  void finish();
  // When the unfinished line held now is due to go out alone (kPartialLineHold after its last byte came);
  // nullopt when none is held. The agent's poll wakes by then.
  std::optional<std::chrono::steady_clock::time_point> partialDue() const;
  // Emits the unfinished line if it is due at `now`. Call it only when the pipe was found empty: the rest of
  // the line may be waiting there.
  void flushPartial(std::chrono::steady_clock::time_point now);

 private:
  void emit(const std::string& line);

  std::string prefix_;
  ConsoleStream& dest_;
  UniqueFd log_;
  std::string log_path_;
  Tail* tail_;  // owned by the agent, outlives this pump
  std::string partial_;
  std::chrono::steady_clock::time_point partial_fed_;  // when partial_'s last byte came
  bool start_sent_ = false;  // the line under way began with a start flushPartial sent alone
};

}  // namespace ringtrain::launch
