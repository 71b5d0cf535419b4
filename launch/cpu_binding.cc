#include "cpu_binding.h"

#include <algorithm>

#include "ringtrain/core/error.h"

namespace ringtrain::launch {

std::vector<int> cpusToShare(const std::vector<int>& asked, const std::vector<int>& allowed) {
  RT_CHECK_T(ConfigError, !allowed.empty(),
             "--bind-to cores: cannot read the CPUs ringrun may run on (sched_getaffinity); use --bind-to none");
  if (asked.empty()) return allowed;
  for (int cpu : asked) {
    if (!std::binary_search(allowed.begin(), allowed.end(), cpu)) {
      RT_THROW(ConfigError, "--cpus: CPU ", cpu, " is not one ringrun may run on (", cpuListText(allowed), ")");
    }
  }
  return asked;
}

std::vector<int> cpusOfLocalRank(const std::vector<int>& allowed, int nproc, int local_rank) {
  const int n = static_cast<int>(allowed.size());
  if (n == 0 || nproc < 1 || local_rank < 0 || local_rank >= nproc) return {};
  if (nproc >= n) return {allowed[static_cast<size_t>(local_rank % n)]};
  const int per = n / nproc, longer = n % nproc;
  const int first = local_rank * per + std::min(local_rank, longer);
  const int count = per + (local_rank < longer ? 1 : 0);
  return {allowed.begin() + first, allowed.begin() + first + count};
}

}  // namespace ringtrain::launch
