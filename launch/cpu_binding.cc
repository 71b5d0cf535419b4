#include "cpu_binding.h"

#include <sched.h>

#include <algorithm>

namespace ringtrain::launch {

std::vector<int> allowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
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

std::string cpuListText(const std::vector<int>& cpus) {
  std::string text;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!text.empty()) text += ',';
    text += std::to_string(cpus[i]);
    if (j > i) text += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return text;
}

}  // namespace ringtrain::launch
