#include "run_log_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "ringtrain/core/error.h"

namespace ringtrain::launch {

RunLogDir makeRunLogDir(const std::string& dir, std::time_t start, int node_rank, int nnodes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  RT_CHECK_T(ConfigError, !ec, "--log-dir: cannot create ", dir, ": ", ec.message());

  std::tm local{};
  ::localtime_r(&start, &local);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &local);
  std::string base = stamp;
  if (nnodes > 1) base += "-node" + std::to_string(node_rank);

  RunLogDir run;
  std::string name = base;
  for (int k = 1;; ++k) {
    run.path = dir + "/" + name;
    if (::mkdir(run.path.c_str(), 0755) == 0) break;
    const int err = errno;
    RT_CHECK_T(ConfigError, err == EEXIST && k < 1000, "--log-dir: cannot create ", run.path, ": ",
               std::strerror(err));
    name = base + "." + std::to_string(k);
  }

  // DIR/latest -> <name>, swapped in by rename so that a reader never finds it missing. Node 0's only: nodes
  // sharing DIR would each repoint it.
  if (node_rank != 0) return run;
  const std::string latest = dir + "/latest";
  struct stat st{};
  if (::lstat(latest.c_str(), &st) == 0 && !S_ISLNK(st.st_mode)) {
    run.warning = latest + " is not a symbolic link: left as it is (this run's logs are in " + run.path + ")";
    return run;
  }
  const std::string temporary = dir + "/.latest." + std::to_string(::getpid());
  ::unlink(temporary.c_str());
  if (::symlink(name.c_str(), temporary.c_str()) != 0 || ::rename(temporary.c_str(), latest.c_str()) != 0) {
    run.warning = "cannot point " + latest + " at " + name + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
  }
  return run;
}

}  // namespace ringtrain::launch
