// The CPUs a process may run on, and their list as taskset writes it: for `ringrun --bind-to cores`
// (launch/cpu_binding.h) and run.pin_threads (src/train/thread_pinning.h) alike.
#pragma once

#include <string>
#include <vector>

namespace ringtrain {

// The CPUs this process may run on (sched_getaffinity), ascending; empty when they cannot be read.
std::vector<int> allowedCpus();

// "0-3,8,10-11": the list syntax of taskset and /proc/PID/status's Cpus_allowed_list.
std::string cpuListText(const std::vector<int>& cpus);

}  // namespace ringtrain
