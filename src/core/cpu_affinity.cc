#include "ringtrain/core/cpu_affinity.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

namespace ringtrain::core {
namespace {

// Sized for the machine, not cpu_set_t's fixed 1024 CPUs (sched_getaffinity fails on a smaller mask).
int maskCpus() {
  const long configured = ::sysconf(_SC_NPROCESSORS_CONF);
  return std::max<int>(CPU_SETSIZE, configured > 0 ? static_cast<int>(configured) : 0);
}

std::mutex& auxiliaryMutex() {
  static std::mutex mu;
  return mu;
}

std::vector<int>& auxiliaryList() {  // guarded by auxiliaryMutex()
  static std::vector<int> cpus;
  return cpus;
}

}  // namespace

std::vector<int> threadCpus() {
  const int count = maskCpus();
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

bool setThreadCpus(const std::vector<int>& cpus) {
  if (cpus.empty()) return false;
  const int count = std::max(maskCpus(), *std::max_element(cpus.begin(), cpus.end()) + 1);
  cpu_set_t* set = CPU_ALLOC(count);
  if (set == nullptr) return false;
  const size_t bytes = CPU_ALLOC_SIZE(count);
  CPU_ZERO_S(bytes, set);
  for (int c : cpus) {
    if (c >= 0) CPU_SET_S(c, bytes, set);
  }
  // pid 0: the calling thread alone (Linux affinity is per thread).
  const bool ok = ::sched_setaffinity(0, bytes, set) == 0;
  CPU_FREE(set);
  return ok;
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

std::optional<CpuSplit> splitCpus(const std::vector<int>& cpus, int compute_threads) {
  if (compute_threads < 1 || cpus.size() <= static_cast<size_t>(compute_threads)) return std::nullopt;
  CpuSplit split;
  split.compute.assign(cpus.begin(), cpus.begin() + compute_threads);
  split.auxiliary.assign(cpus.begin() + compute_threads, cpus.end());
  return split;
}

void setAuxiliaryCpus(std::vector<int> cpus) {
  std::lock_guard<std::mutex> lock(auxiliaryMutex());
  auxiliaryList() = std::move(cpus);
}

std::vector<int> auxiliaryCpus() {
  std::lock_guard<std::mutex> lock(auxiliaryMutex());
  return auxiliaryList();
}

void moveToAuxiliaryCpus() {
  const std::vector<int> cpus = auxiliaryCpus();
  // Best effort: a refused mask leaves the thread where it started, which is only slower.
  if (!cpus.empty()) setThreadCpus(cpus);
}

}  // namespace ringtrain::core
