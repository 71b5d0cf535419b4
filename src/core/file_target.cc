#include "ringtrain/core/file_target.h"

#include <filesystem>
#include <system_error>

#include "ringtrain/core/error.h"

namespace ringtrain {

std::string atomicWriteTarget(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path target(path);
  std::error_code ec;
  // The kernel's own limit on links followed in one lookup (ELOOP).
  for (int links = 0; fs::is_symlink(fs::symlink_status(target, ec)); ++links) {
    if (links >= 40) RT_THROW(DataError, "cannot write ", path, ": too many levels of symbolic links");
    const fs::path next = fs::read_symlink(target, ec);
    if (ec) RT_THROW(DataError, "cannot write ", path, ": cannot read the link ", target.string(), ": ", ec.message());
    target = next.is_absolute() ? next : target.parent_path() / next;
  }
  const fs::file_status status = fs::status(target, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    const char* kind = fs::is_directory(status) ? "a directory" : "not a regular file";
    RT_THROW(DataError, "cannot write ", path, (target.string() == path ? "" : " (-> " + target.string() + ")"),
             ": it is ", kind, ", and writing it atomically would replace it with a file; give a file's path");
  }
  return target.string();
}

}  // namespace ringtrain
