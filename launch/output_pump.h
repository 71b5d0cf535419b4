// Turns a rank's stdout/stderr byte stream into whole lines on ringrun's own stdout/stderr, each prefixed
// "[rank R] " and written with a single write() so lines of different ranks never interleave mid-line;
// optionally copies them to a log file, and keeps the rank's last lines for the failure report.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>

#include "core/unique_fd.h"

namespace ringtrain::launch {

inline constexpr size_t kTailLines = 10;
inline constexpr size_t kMaxLineBytes = 64 * 1024;  // longer lines are passed on in pieces

// The last lines a rank printed (both streams, in arrival order).
using Tail = std::deque<std::string>;

class OutputPump {
 public:
  // `dest_fd` is 1 or 2; `log_path` empty for none (throws Error when it cannot be created); `tail` must
  // outlive the pump.
  OutputPump(int rank, int dest_fd, const std::string& log_path, Tail* tail);
  // Feeds bytes read from the rank; emits every complete line.
  void feed(const char* data, size_t n);
  // End of stream: emits a last unterminated line.
  void finish();

 private:
  void emit(const std::string& line);

  std::string prefix_;
  int dest_fd_;
  UniqueFd log_;
  Tail* tail_;  // owned by the agent, outlives this pump
  std::string partial_;
};

}  // namespace ringtrain::launch
