// Text from a file as an error message may quote it. A binary file handed over by mistake would otherwise
// put raw bytes (escape sequences included) on the user's terminal.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

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

}  // namespace ringtrain::detail
