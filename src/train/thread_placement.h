// Where a training rank's threads run (run.pin_compute_thread; ringtrain/core/cpu_affinity.h says why).
//
// Only a rank its launcher gave CPUs of its own (RINGTRAIN_CPUS is set, as ringrun --bind-to cores does) is
// placed: on a machine where ranks or jobs run unbound, one CPU kept by every rank's compute thread would
// be the same CPU for all of them. Only with run.threads 1: ATen's intra-op threads start where the thread
// that first needs them runs, which this class does not control.
#pragma once

#include <string>
#include <vector>

#include "ringtrain/config/config.h"

namespace ringtrain::train {

class ThreadPlacement {
 public:
  // Call on the compute thread before any other thread of the rank starts. When placement applies, moves
  // this thread onto the auxiliary CPUs, so that every thread started from here on (Gloo's, the loader's,
  // the communicator's) starts there, and sets them process-wide for threads started later.
  explicit ThreadPlacement(const config::JobConfig& job);
  ~ThreadPlacement();  // this thread back on all the rank's CPUs; no auxiliary CPUs
  ThreadPlacement(const ThreadPlacement&) = delete;
  ThreadPlacement& operator=(const ThreadPlacement&) = delete;

  // Right before the training loop: this thread onto the compute CPU.
  void enterTraining();
  // After it: this thread back on all the rank's CPUs (evaluation, checkpoint and export need no pinning).
  void leaveTraining();

  bool active() const { return !compute_.empty(); }
  // "compute thread on CPU 4, other threads on 5", or why there is no placement.
  const std::string& description() const { return description_; }

 private:
  std::vector<int> all_, compute_, auxiliary_;
  std::string description_;
};

}  // namespace ringtrain::train
