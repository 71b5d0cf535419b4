#include "comm/spin_wait.h"

#include <sched.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace ringtrain::comm {
namespace {

// ceil(quota / period) CPUs, or INT_MAX for "max", an unreadable file or nonsense.
int cpusOfQuota(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return INT_MAX;
  return static_cast<int>(std::min<long long>(INT_MAX, (quota + period - 1) / period));
}

}  // namespace

// cgroup v2 keeps the quota in cpu.max ("200000 100000" or "max 100000"), v1 in cpu.cfs_quota_us (-1: none)
// over cpu.cfs_period_us. Inside a container's cgroup namespace the process's path is "/" and the files sit
// at the mount's top.
int cpuQuotaOfThisProcess() {
  std::ifstream groups("/proc/self/cgroup");
  std::string line;
  int cpus = INT_MAX;
  while (std::getline(groups, line)) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controllers.empty()) {  // v2
      std::ifstream max("/sys/fs/cgroup" + path + "/cpu.max");
      std::string quota;
      long long period = 0;
      if (max >> quota >> period && quota != "max") cpus = std::min(cpus, cpusOfQuota(std::atoll(quota.c_str()), period));
      continue;
    }
    std::istringstream names(controllers);
    std::string name;
    bool cpu = false;
    while (std::getline(names, name, ',')) cpu = cpu || name == "cpu";
    if (!cpu) continue;
    for (const std::string mount : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {  // v1
      std::ifstream quota_file(mount + path + "/cpu.cfs_quota_us"), period_file(mount + path + "/cpu.cfs_period_us");
      long long quota = 0, period = 0;
      if (quota_file >> quota && period_file >> period) {
        cpus = std::min(cpus, cpusOfQuota(quota, period));
        break;
      }
    }
  }
  return cpus;
}

namespace {

// CPUs named by a list such as "0-3,8" (RINGTRAIN_CPUS); 0 for anything else.
int countCpuList(const std::string& list) {
  std::istringstream in(list);
  std::string part;
  int count = 0;
  while (std::getline(in, part, ',')) {
    int first = 0, last = 0;
    char dash = 0;
    std::istringstream range(part);
    if (!(range >> first)) return 0;
    last = first;
    if (range >> dash && (dash != '-' || !(range >> last))) return 0;
    if (last < first) return 0;
    count += last - first + 1;
  }
  return count;
}

}  // namespace

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
  // ringrun --bind-to cores names this rank's own CPUs; where the binding failed (ringrun then says so and
  // runs the rank unbound) the affinity is wider than the share, and the share does not count.
  const char* share = std::getenv("RINGTRAIN_CPUS");
  const bool own_share = share != nullptr && allowed <= countCpuList(share);
  return spinForCpus(spin_us, ranks_on_host, allowed, own_share, cpuQuotaOfThisProcess());
}

}  // namespace ringtrain::comm
