// `ringrun --bind-to cores`: each local rank runs on its own share of the CPUs ringrun may use.
//
// Why: with every rank free to run anywhere, the scheduler moves a rank's compute thread between cores and
// lets its loader and communication threads land beside another rank's compute, so each step waits for
// whichever rank was disturbed most. (OpenMPI's mpirun binds by default, to cores for up to 2 ranks and
// to sockets or NUMA nodes above; torchrun does not bind.) "Cores" are logical CPUs taken in id order: the
// topology is not read, so on a machine with two hardware threads per core a rank's share may hold both
// threads of one core, or two ranks may share a core. `--cpus` gives the order to share them out in, where
// a measurement (bench/cpu_pairs) knows which CPUs are one core's threads and the machine does not say.
#pragma once

#include <vector>

#include "core/cpu_list.h"  // allowedCpus(), cpuListText()

namespace ringtrain::launch {

// The CPUs `ringrun --bind-to cores` shares out, in order: `asked` (--cpus) when given, else all of
// `allowed` (the CPUs ringrun may run on) in id order. Throws ConfigError naming a CPU of `asked` that is not
// allowed, or when `allowed` is empty (unreadable).
std::vector<int> cpusToShare(const std::vector<int>& asked, const std::vector<int>& allowed);

// Local rank `local_rank` of `nproc`: the CPUs in `allowed` are cut into nproc contiguous slices in order,
// the first (size % nproc) slices one CPU longer, so every CPU is used. With more ranks than CPUs, rank r
// gets CPU allowed[r % size]: ranks then share CPUs evenly.
std::vector<int> cpusOfLocalRank(const std::vector<int>& allowed, int nproc, int local_rank);

}  // namespace ringtrain::launch
