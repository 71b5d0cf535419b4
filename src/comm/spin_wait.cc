#include "comm/spin_wait.h"

#include <sched.h>
#include <sys/sysinfo.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/cpu_list.h"

namespace ringtrain::comm {
namespace {

// Whole CPUs in a quota of `quota` per `period` (1.5 CPUs count as 1: a rank counts on what it always
// has), at least 1; INT_MAX for no quota (-1, "max") or nonsense.
int cpusOfQuota(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return INT_MAX;
  return static_cast<int>(std::clamp<long long>(quota / period, 1, INT_MAX));
}

// The smallest quota on `path` and every cgroup above it (a limit on a parent slice holds for its
// children), read by `quotaAt(directory)`.
template <typename QuotaAt>
int smallestQuotaUp(std::string path, QuotaAt quotaAt) {
  int cpus = INT_MAX;
  while (true) {
    cpus = std::min(cpus, quotaAt(path));
    if (path.empty() || path == "/") return cpus;
    const size_t slash = path.find_last_of('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
}

}  // namespace

// cgroup v2 keeps the quota in cpu.max ("200000 100000" or "max 100000"), v1 in cpu.cfs_quota_us (-1: none)
// over cpu.cfs_period_us. Inside a container's cgroup namespace the process's path is "/" and the files sit
// at the mount's top.
int cpuQuotaOfThisProcess() {
  std::ifstream file("/proc/self/cgroup");
  std::stringstream groups;
  groups << file.rdbuf();
  return cpuQuotaOf(groups.str(), "/sys/fs/cgroup");
}

int cpuQuotaOf(const std::string& proc_cgroup, const std::string& cgroup_root) {
  std::istringstream groups(proc_cgroup);
  std::string line;
  int cpus = INT_MAX;
  while (std::getline(groups, line)) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controllers.empty()) {  // v2
      cpus = std::min(cpus, smallestQuotaUp(path, [&](const std::string& dir) {
                        std::ifstream max(cgroup_root + dir + "/cpu.max");
                        std::string quota;
                        long long period = 0;
                        return max >> quota >> period && quota != "max" ? cpusOfQuota(std::atoll(quota.c_str()), period)
                                                                        : INT_MAX;
                      }));
      continue;
    }
    std::istringstream names(controllers);
    std::string name;
    bool cpu = false;
    while (std::getline(names, name, ',')) cpu = cpu || name == "cpu";
    if (!cpu) continue;
    for (const std::string& mount : {cgroup_root + "/cpu", cgroup_root + "/cpu,cpuacct"}) {  // v1
      cpus = std::min(cpus, smallestQuotaUp(path, [&](const std::string& dir) {
                        std::ifstream quota_file(mount + dir + "/cpu.cfs_quota_us");
                        std::ifstream period_file(mount + dir + "/cpu.cfs_period_us");
                        long long quota = 0, period = 0;
                        return quota_file >> quota && period_file >> period ? cpusOfQuota(quota, period) : INT_MAX;
                      }));
    }
  }
  return cpus;
}

bool countsAsOwnShare(int allowed, const std::string& share, int ranks_on_host, int online) {
  return allowed >= 1 && allowed <= static_cast<int>(parseCpuList(share).value_or(std::vector<int>{}).size()) &&
         static_cast<long long>(allowed) * ranks_on_host <= online;
}

std::chrono::nanoseconds spinForCpus(int spin_us, int ranks_on_host, int allowed, bool own_share, int quota_cpus) {
  if (spin_us >= 0) return std::chrono::microseconds(spin_us);
  if (ranks_on_host <= 0) return kShortSpin;
  int per_rank = own_share ? allowed : allowed / ranks_on_host;
  if (quota_cpus != INT_MAX) per_rank = std::min(per_rank, quota_cpus / ranks_on_host);
  return per_rank >= 2 ? std::chrono::nanoseconds(kLongSpin) : std::chrono::nanoseconds(kShortSpin);
}

std::chrono::nanoseconds chooseSpin(int spin_us, int ranks_on_host) {
  if (spin_us >= 0 || ranks_on_host <= 0) return spinForCpus(spin_us, ranks_on_host, 1, false, INT_MAX);
  cpu_set_t mine;
  CPU_ZERO(&mine);
  const int allowed = ::sched_getaffinity(0, sizeof(mine), &mine) == 0 ? CPU_COUNT(&mine) : 1;
  const char* share = std::getenv("RINGTRAIN_CPUS");
  const bool own_share = share != nullptr && countsAsOwnShare(allowed, share, ranks_on_host, ::get_nprocs());
  return spinForCpus(spin_us, ranks_on_host, allowed, own_share, cpuQuotaOfThisProcess());
}

}  // namespace ringtrain::comm
