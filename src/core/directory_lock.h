// One writer per directory: a training run holds its output directory (and a checkpoint.dir outside it) for
// as long as it runs. A second run started on the same directory would otherwise remove the first's
// checkpoints ("starting afresh") or write its own over them, and both would report files that are the
// other's. The lock is flock(2) on a file in the directory: released by the kernel when the process ends,
// however it ends. On a network file system a host that died may hold it on (NFSv4 until its lease ends,
// NLM until it comes back): the refusal then says which file to remove. `ringtrain train` alone takes it.
#pragma once

#include <string>

#include "core/unique_fd.h"

namespace ringtrain {

class DirectoryLock {
 public:
  // Locks `dir` (which exists) for this process, or throws ConfigError naming `key`, the directory and the
  // holder (its pid and host, as it wrote them) when another process holds it. Where the file system has
  // no locks, warns and holds nothing.
  DirectoryLock(const std::string& dir, const std::string& key);

  // Holds one file instead, through a lock file beside it (".<name>.ringtrain.lock"): a log.metrics_file
  // that two runs name would hold only the later's records. Its directory is made if missing.
  static DirectoryLock forFile(const std::string& file, const std::string& key);

  static constexpr const char* kFileName = ".ringtrain.lock";

 private:
  // `lock_path` is flocked; `held` (a directory or a file) and `why` are for the refusal.
  DirectoryLock(const std::string& lock_path, const std::string& key, const std::string& held, const std::string& why);

  UniqueFd fd_;
};

}  // namespace ringtrain
