// Reading a file the user named. A directory opens as a stream that reads nothing, which readers would
// otherwise report as an "empty file".
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

#include "ringtrain/core/error.h"

namespace ringtrain::detail {

// Throws DataError "<path>: is a directory, not <what>" when `path` names a directory.
inline void refuseDirectory(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) RT_THROW(DataError, path, ": is a directory, not ", what);
}

}  // namespace ringtrain::detail
