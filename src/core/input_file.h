// Reading a file the user named: a directory opens as a stream that reads nothing, which readers would
// otherwise report as an "empty file"; its first line may start with a byte order mark, its lines may end in
// CRLF, and its text may not be UTF-8.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "ringtrain/core/error.h"

namespace ringtrain::detail {

// Throws DataError "<path>: is a directory, not <what>" when `path` names a directory.
inline void refuseDirectory(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) RT_THROW(DataError, path, ": is a directory, not ", what);
}

// `line` without the CR (and LF) it ends with: files written on Windows end their lines in CRLF.
inline std::string_view withoutLineEnd(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
  return line;
}

// `first_line` without the UTF-8 byte order mark some editors and spreadsheets write before it.
inline std::string_view withoutByteOrderMark(std::string_view first_line) {
  if (first_line.substr(0, 3) == "\xEF\xBB\xBF") first_line.remove_prefix(3);
  return first_line;
}

enum class Utf8Error { kNone, kBadByte, kTruncated, kBadSequence };

// One step of decoding UTF-8: the code point at text[i] goes to `cp` and i moves past it. On kBadByte, i is
// left at the offending byte (a lead byte, or a continuation byte that is not one); kBadSequence is an
// overlong form, a surrogate or a code point past U+10FFFF.
inline Utf8Error nextCodePoint(std::string_view text, size_t& i, uint32_t& cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char c = p[i];
  if (c < 0x80) {
    cp = c;
    ++i;
    return Utf8Error::kNone;
  }
  size_t len = 0;
  if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f;
  else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f;
  else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07;
  else return Utf8Error::kBadByte;
  if (i + len > text.size()) return Utf8Error::kTruncated;
  for (size_t k = 1; k < len; ++k) {
    if ((p[i + k] & 0xc0) != 0x80) {
      i += k;
      return Utf8Error::kBadByte;
    }
    cp = (cp << 6) | (p[i + k] & 0x3f);
  }
  const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
  if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return Utf8Error::kBadSequence;
  i += len;
  return Utf8Error::kNone;
}

}  // namespace ringtrain::detail
