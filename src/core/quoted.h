// Text from a file as an error message may quote it. A binary file handed over by mistake would otherwise
// put raw bytes (escape sequences included) on the user's terminal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/input_file.h"  // nextCodePoint

namespace ringtrain::detail {

// `text` with bytes outside printable ASCII written as \xNN, cut after `limit` bytes ("..." marks a cut).
inline std::string quotable(std::string_view text, size_t limit = 80) {
  std::string out;
  for (const char c : text.substr(0, limit)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", byte);
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

// `text` for a terminal: valid UTF-8 as it is, and each byte of what is not (Latin-1 text, a broken
// sequence) or of a control character written as \xNN. Names read from users' files (items.tsv) may be
// anything; printed raw, they garble the line or reach the terminal as escape sequences.
inline std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    uint32_t cp = 0;
    const bool valid = nextCodePoint(text, i, cp) == Utf8Error::kNone;
    if (valid && cp >= 0x20 && cp != 0x7f && (cp < 0x80 || cp >= 0xa0)) {
      out.append(text.substr(at, i - at));
    } else {
      const size_t end = valid ? i : at + 1;  // an invalid byte alone; the decoding goes on after it
      for (size_t b = at; b < end; ++b) out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[b]));
      i = end;
    }
  }
  return out;
}

}  // namespace ringtrain::detail
