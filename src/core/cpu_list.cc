#include "core/cpu_list.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

namespace ringtrain {

std::vector<int> allowedCpus() {
  // Sized for the machine, not cpu_set_t's fixed 1024 CPUs (sched_getaffinity fails on a smaller mask).
  const long configured = ::sysconf(_SC_NPROCESSORS_CONF);
  const int count = std::max<int>(CPU_SETSIZE, configured > 0 ? static_cast<int>(configured) : 0);
  cpu_set_t* set = CPU_ALLOC(count);
  const size_t bytes = CPU_ALLOC_SIZE(count);
  std::vector<int> cpus;
  if (set != nullptr && ::sched_getaffinity(0, bytes, set) == 0) {
    for (int c = 0; c < count; ++c) {
      if (CPU_ISSET_S(c, bytes, set)) cpus.push_back(c);
    }
  }
  CPU_FREE(set);
  return cpus;
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

std::optional<std::vector<int>> parseCpuList(const std::string& text) {
  // Each CPU id at most 5 digits: Linux counts at most 8,192 CPUs, and a range stays small.
  const auto number = [&](size_t& at) -> std::optional<int> {
    const size_t start = at;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9' && at - start < 6) ++at;
    if (at == start || at - start > 5) return std::nullopt;
    return std::stoi(text.substr(start, at - start));
  };
  std::vector<int> cpus;
  size_t at = 0;
  while (true) {
    const std::optional<int> first = number(at);
    if (!first) return std::nullopt;
    int last = *first;
    if (at < text.size() && text[at] == '-') {
      ++at;
      const std::optional<int> end = number(at);
      if (!end || *end < *first) return std::nullopt;
      last = *end;
    }
    for (int c = *first; c <= last; ++c) cpus.push_back(c);
    if (at == text.size()) return cpus;
    if (text[at] != ',') return std::nullopt;
    ++at;
  }
}

}  // namespace ringtrain
