// Which CPUs a thread may run on, and where a training rank's threads go when its launcher gave it CPUs of
// its own (`ringrun --bind-to cores`, which sets the process's mask and RINGTRAIN_CPUS).
//
// Why split a rank's CPUs: a rank has one thread that runs forward and backward (with ATen's intra-op
// threads when run.threads > 1) and several that serve it: the loader's workers, the communicator's thread
// and Gloo's, the sparse rows' helper. Left free over every CPU of the rank's share, a helper woken during
// backward can take the CPU the compute thread is on; that rank's backward then ends late, and in a
// synchronous step every other rank waits for it. With the first run.threads CPUs kept for the compute
// thread and the rest shared by the helpers, the helpers' work never preempts it.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ringtrain::core {

// The CPUs the calling thread may run on (sched_getaffinity), ascending; empty when they cannot be read.
std::vector<int> threadCpus();

// Restricts the calling thread to `cpus`; false (the mask unchanged) when the OS refuses or `cpus` is empty.
bool setThreadCpus(const std::vector<int>& cpus);

// "0-3,8,10-11": the list syntax of taskset and /proc/PID/status's Cpus_allowed_list.
std::string cpuListText(const std::vector<int>& cpus);

struct CpuSplit {
  std::vector<int> compute;    // the first `compute_threads` CPUs: forward and backward
  std::vector<int> auxiliary;  // the rest: every thread that serves the compute thread
};

// Nothing to split (nullopt) unless `cpus` has at least one CPU beyond `compute_threads` (>= 1).
std::optional<CpuSplit> splitCpus(const std::vector<int>& cpus, int compute_threads);

// Process-wide: where the threads ringtrain starts run. Empty (the default) leaves them where they start.
void setAuxiliaryCpus(std::vector<int> cpus);
std::vector<int> auxiliaryCpus();

// The first thing every thread ringtrain starts in a rank does (loader workers, the communicator's thread,
// the sparse rows' helper): moves it onto the auxiliary CPUs when some are set. A thread started by the
// compute thread would otherwise inherit the compute thread's CPU.
void moveToAuxiliaryCpus();

}  // namespace ringtrain::core
