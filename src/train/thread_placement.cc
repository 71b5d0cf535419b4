#include "train/thread_placement.h"

#include <cstdlib>

#include "ringtrain/core/cpu_affinity.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::train {

ThreadPlacement::ThreadPlacement(const config::JobConfig& job) {
  if (!job.run.pin_compute_thread) {
    description_ = "threads unplaced (run.pin_compute_thread is false)";
    return;
  }
  if (std::getenv("RINGTRAIN_CPUS") == nullptr) {
    description_ = "threads unplaced (the launcher gave this rank no CPUs of its own)";
    return;
  }
  if (job.run.threads != 1) {
    description_ = "threads unplaced (run.threads is not 1)";
    return;
  }
  all_ = core::threadCpus();
  const std::optional<core::CpuSplit> split = core::splitCpus(all_, 1);
  if (!split) {
    description_ = "threads unplaced (one CPU: " + core::cpuListText(all_) + ")";
    return;
  }
  if (!core::setThreadCpus(split->auxiliary)) {
    description_ = "threads unplaced (the OS refused a thread's CPU mask)";
    warn("run.pin_compute_thread: {}", description_);
    return;
  }
  compute_ = split->compute;
  auxiliary_ = split->auxiliary;
  core::setAuxiliaryCpus(auxiliary_);
  description_ = "compute thread on CPU " + core::cpuListText(compute_) + ", other threads on " +
                 core::cpuListText(auxiliary_);
}

ThreadPlacement::~ThreadPlacement() {
  if (!active()) return;
  core::setAuxiliaryCpus({});
  core::setThreadCpus(all_);
}

void ThreadPlacement::enterTraining() {
  if (active()) core::setThreadCpus(compute_);
}

void ThreadPlacement::leaveTraining() {
  if (active()) core::setThreadCpus(all_);
}

}  // namespace ringtrain::train
