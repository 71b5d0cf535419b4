// Reading a file the user named: a directory opens as a stream that reads nothing, which readers would
// otherwise report as an "empty file"; and its lines may end in CRLF.
#pragma once

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

}  // namespace ringtrain::detail
