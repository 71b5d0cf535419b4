// The CPUs a process may run on, and their list as taskset writes it: for `ringrun --bind-to cores`
// (launch/cpu_binding.h) and run.pin_threads (src/train/thread_pinning.h) alike.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ringtrain {

// The CPUs this process may run on (sched_getaffinity), ascending; empty when they cannot be read.
std::vector<int> allowedCpus();

// "0-3,8,10-11": the list syntax of taskset and /proc/PID/status's Cpus_allowed_list.
std::string cpuListText(const std::vector<int>& cpus);

// The CPUs a list in that syntax names, in the order it names them ("0,8,1-2" -> 0 8 1 2); nullopt for text
// that is no such list (empty parts, a range running backwards, anything but digits, ',' and '-').
std::optional<std::vector<int>> parseCpuList(const std::string& text);

}  // namespace ringtrain
