#include "ringtrain/core/file_target.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/process_state.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/hash.h"
#include "ringtrain/core/logging.h"

namespace ringtrain {

namespace {
// Whether `path` is an entry of a /proc/<pid>/fd directory (/dev/stdout and /dev/fd/N lead there): a
// descriptor, whose file an atomic write would replace by name (a redirect's file, unlinked under the shell's
// descriptor, so that what is printed after goes nowhere), or beside which nothing can be placed.
bool namesADescriptor(const std::filesystem::path& path) {
  std::error_code ec;
  const std::string dir = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec).parent_path(), ec)
                              .string();
  return !ec && dir.rfind("/proc/", 0) == 0 && dir.size() > 9 && dir.compare(dir.size() - 3, 3, "/fd") == 0 &&
         dir.find('/', 6) == dir.size() - 3;
}
}  // namespace

std::string atomicWriteTarget(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // First what the kernel finds at the end of the links: it also follows the links /proc writes as
  // "pipe:[N]" or "socket:[N]" (/dev/stdout into a pipe), which name no path to walk by hand.
  const fs::file_status status = fs::status(path, ec);
  if (fs::is_directory(status)) RT_THROW(DataError, "cannot write ", path, ": it is a directory; give a file's path");
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    RT_THROW(DataError, "cannot write ", path, ": it is not a regular file (a device, FIFO or socket), and an atomic ",
             "write would replace it with one; give a file's path");
  }
  // Then the name the links lead to, where the temporary file goes and is renamed (a dangling link's
  // target is created).
  fs::path target(path);
  // The kernel's own limit on links followed in one lookup (ELOOP).
  for (int links = 0; fs::is_symlink(fs::symlink_status(target, ec)); ++links) {
    if (links >= 40) RT_THROW(DataError, "cannot write ", path, ": too many levels of symbolic links");
    if (namesADescriptor(target)) {
      RT_THROW(DataError, "cannot write ", path, ": it names a descriptor of this process (", target.string(),
               "), not a file: an atomic write would replace its file under it; give a file's path");
    }
    const fs::path next = fs::read_symlink(target, ec);
    if (ec) RT_THROW(DataError, "cannot write ", path, ": cannot read the link ", target.string(), ": ", ec.message());
    target = next.is_absolute() ? next : target.parent_path() / next;
  }
  return target.string();
}

namespace {
// Whether `name` is `stem` followed by a pid whose process is gone (this process's own pid included).
bool tempOfGoneWriter(const std::string& name, const std::string& stem) {
  if (name.size() <= stem.size() || name.compare(0, stem.size(), stem) != 0) return false;
  const std::string pid_text = name.substr(stem.size());
  char* end = nullptr;
  const long pid = std::strtol(pid_text.c_str(), &end, 10);
  if (*end != '\0' || pid <= 0 || pid_text[0] == '+' || pid_text[0] == '-') return false;
  const bool running = pid != ::getpid() && !processGone(static_cast<pid_t>(pid));
  return !running;
}
}  // namespace

void removeTempsOfGoneWriters(const std::string& dir, const std::function<std::string(const std::string&)>& stem_of,
                              const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string stem = stem_of(name);
    if (stem.empty() || !entry.is_regular_file(ec) || !tempOfGoneWriter(name, stem)) continue;
    const auto bytes = entry.file_size(ec);
    if (fs::remove(entry.path(), ec)) {
      warn("removed {} ({:.1f} MB), left by {} that was interrupted", entry.path().string(),
           static_cast<double>(bytes) / 1e6, what);
    }
  }
}

namespace {
constexpr size_t kNameMax = 255;  // NAME_MAX on Linux's file systems

std::filesystem::path dirOf(const std::filesystem::path& target) {
  return target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
}
// ".<name>.<kind>.", the pid follows. A name too long for that within NAME_MAX (255 bytes) keeps its start,
// cut between UTF-8 characters, and an FNV-1a of the whole name, so that long names sharing a start still get
// temporaries of their own (and find their own leftovers again).
std::string tempStem(const std::filesystem::path& target, const std::string& kind) {
  constexpr size_t kPidDigits = 10, kHashPart = 17;  // "~" and 16 hex digits
  std::string name = target.filename().string();
  const size_t fixed = 1 + 1 + kind.size() + 1 + kPidDigits;
  if (name.size() + fixed > kNameMax) {
    const std::string hash = fmt::format("~{:016x}", fnv1a64(name.data(), name.size()));
    size_t keep = kNameMax > fixed + kHashPart ? kNameMax - fixed - kHashPart : 0;
    while (keep > 0 && (static_cast<unsigned char>(name[keep]) & 0xC0) == 0x80) --keep;  // not mid-character
    name = name.substr(0, keep) + hash;
  }
  return "." + name + "." + kind + ".";
}
}  // namespace

std::string tempPathFor(const std::string& target, const std::string& kind) {
  const std::filesystem::path t(target);
  return (dirOf(t) / (tempStem(t, kind) + std::to_string(::getpid()))).string();
}

void removeStaleTempsOf(const std::string& target, const std::string& what, const std::string& kind) {
  const std::filesystem::path t(target);
  const std::string stem = tempStem(t, kind);
  removeTempsOfGoneWriters(dirOf(t).string(), [&](const std::string&) { return stem; }, what);
}

AtomicFile::AtomicFile(std::string target, std::string what)
    : target_(std::move(target)), what_(std::move(what)), temp_(tempPathFor(target_)) {
  // A name no file system takes would fail only at the rename, after every byte was written.
  const std::string name = std::filesystem::path(target_).filename().string();
  if (name.size() > kNameMax) {
    RT_THROW(DataError, "cannot write ", what_, " ", target_, ": its name is ", name.size(),
             " bytes long, more than a file name may have (", kNameMax, ")");
  }
  // What an interrupted write of this file left (as large as the file) goes before this one begins.
  removeStaleTempsOf(target_, "a write of the " + what_);
  // 0666 less the umask, as fopen() and the shell give a new file.
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) fail("creating", errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ < 0) return;  // committed (or never opened)
  ::close(fd_);
  ::unlink(temp_.c_str());
}

void AtomicFile::write(std::string_view bytes) {
  RT_CHECK(fd_ >= 0, "AtomicFile::write after commit() of ", target_);
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("writing", n < 0 ? errno : ENOSPC);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

void AtomicFile::commit() {
  RT_CHECK(fd_ >= 0, "AtomicFile::commit twice for ", target_);
  if (::fsync(fd_) != 0) fail("syncing", errno);
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temp_.c_str());
    fail("closing", error);
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp_.c_str());
    RT_THROW(DataError, "cannot write ", what_, " ", target_, ": renaming ", temp_, " over it: ", std::strerror(error));
  }
  // The rename itself reaches the disk with the directory's own fsync. A directory that cannot be opened
  // (no read permission) keeps the rename in the page cache until the kernel writes it: not an error.
  const int dir = ::open(dirOf(target_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void AtomicFile::fail(const std::string& step, int error) const {
  RT_THROW(DataError, "cannot write ", what_, " ", target_, ": ", step, " ", temp_, ": ", std::strerror(error));
}

}  // namespace ringtrain
