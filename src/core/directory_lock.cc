#include "core/directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain {
namespace {

std::string hostName() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("?");
}

// What the holder wrote: "pid 4242 on host-a", or "" when unreadable.
std::string holderOf(int fd) {
  char text[300] = {};
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  if (n <= 0) return "";
  std::string s(text, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

DirectoryLock::DirectoryLock(const std::string& dir, const std::string& key)
    : DirectoryLock(dir + "/" + kFileName, key, dir,
                    "two runs in one directory would remove and overwrite each other's checkpoints and exports") {}

DirectoryLock DirectoryLock::forFile(const std::string& file, const std::string& key) {
  const std::filesystem::path target(file);
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) RT_THROW(ConfigError, key, ": cannot create ", dir.string(), ": ", ec.message());
  const std::string lock = (dir / ("." + target.filename().string() + ".ringtrain.lock")).string();
  return DirectoryLock(lock, key, file, "two runs writing one file would keep only one's records");
}

DirectoryLock::DirectoryLock(const std::string& path, const std::string& key, const std::string& held,
                             const std::string& why) {
  fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  // Another user's lock file in a shared directory: flock needs no write access (only the holder's line
  // below does, and that is for messages).
  if (!fd_.valid() && errno == EACCES) fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd_.valid()) RT_THROW(ConfigError, key, ": cannot create ", path, ": ", std::strerror(errno));
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      const std::string holder = holderOf(fd_.get());
      // On a network file system a lock can outlive a host that died (until its lease ends, or for good).
      const std::string here = " on " + hostName();
      const bool elsewhere = !holder.empty() && holder.size() >= here.size() &&
                             holder.compare(holder.size() - here.size(), here.size(), here) != 0;
      RT_THROW(ConfigError, key, ": ", held, " is in use by another ringtrain run",
               holder.empty() ? std::string() : " (" + holder + ")",
               "; ", why, ". Wait for it, or give this run another ", key,
               elsewhere ? "; if that host is gone for good, remove " + path : std::string());
    }
    // A file system without locks (some network and FUSE ones say ENOLCK or EOPNOTSUPP) must not stop
    // the run: it goes on unguarded, and says so.
    warn("{}: cannot lock {} ({}): another run started in {} would not be refused", key, path, std::strerror(err),
         held);
    fd_.reset();
    return;
  }
  const std::string me = "pid " + std::to_string(::getpid()) + " on " + hostName() + "\n";
  // Who holds it, for the message above; a failed write only makes that message vaguer.
  if (::ftruncate(fd_.get(), 0) == 0) {
    [[maybe_unused]] const ssize_t written = ::pwrite(fd_.get(), me.data(), me.size(), 0);
  }
}

}  // namespace ringtrain
