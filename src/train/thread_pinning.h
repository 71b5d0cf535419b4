// run.pin_threads: a rank's training thread alone on one of its CPUs, and every other thread of the process
// (communication, arrival board, loader workers, the sparse-row helper, Gloo's and MPI's own) on the rest.
//
// Why: under `ringrun --bind-to cores` with 2 CPUs per rank, a rank runs five or more threads on its two
// CPUs, and the scheduler may put the training thread beside a polling communication thread or a loader
// worker. On the H100 machines 8 ranks ran the same forward and backward 1.45x apart, which ranks changing
// from run to run; whether this is why is for the device to tell (the trace records each pass's CPU).
#pragma once

#include <string>
#include <vector>

namespace ringtrain::train {

// Puts the calling thread on `cpu` alone and every other thread of this process (/proc/self/task) on
// `others`. A thread started later inherits its starter's CPUs: sweep again once it runs. Returns how many
// other threads were moved (one that ended meanwhile is skipped). Throws Error when the calling thread
// cannot be moved.
int pinThreads(int cpu, const std::vector<int>& others);

class ThreadPinning {
 public:
  // On when asked and this rank is bound to two or more CPUs of its own (ringrun --bind-to cores:
  // RINGTRAIN_CPUS, as comm.spin_us's rule reads it); otherwise off, and whyOff() says why.
  ThreadPinning(bool asked, int ranks_on_host);
  bool enabled() const { return why_off_.empty() && asked_; }
  const std::string& whyOff() const { return why_off_; }
  // Pins (pinThreads): before the loop, and again after the first step, whose backward starts the sparse-row
  // helper. Returns what it did, for the log ("training thread on CPU 4, 6 other threads on CPU 5").
  std::string sweep();

 private:
  bool asked_;
  std::vector<int> cpus_;
  std::string why_off_;
};

}  // namespace ringtrain::train
