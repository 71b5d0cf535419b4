// Which steps the ranks look for a checkpoint request at (SIGUSR1 on any rank) between log steps.
//
// A batch scheduler warns a fixed time before it pre-empts a job (Slurm's --signal=USR1@60): the checkpoint
// must come within seconds, however far off the next log step is. A look is a collective, so every rank
// must look at the same steps. The distance to the next look is therefore computed from figures every rank
// holds alike: the steps since the last look, and rank 0's whole milliseconds over them, which the look
// itself carries to the others (one rank's integer, exact whatever order a backend sums in).
#pragma once

#include <cstdint>

namespace ringtrain::train {

inline constexpr int64_t kRequestLookPeriodMs = 1000;  // about this much training between two looks
// The first look comes after the first step: a warning may have come while the job started, and a step may
// be long.
inline constexpr int64_t kFirstRequestLook = 1;
inline constexpr int64_t kMaxStepsBetweenLooks = 10000;

class CheckpointRequestSchedule {
 public:
  // The run starts after `start_step` (0, or a resumed run's checkpoint step).
  explicit CheckpointRequestSchedule(int64_t start_step);

  // True when the ranks look at `step`.
  bool due(int64_t step) const { return step >= next_; }
  // The ranks looked at `step` (a due step or a log step), rank 0 having trained `leader_ms` milliseconds
  // since the previous look (or the start): the next look comes about kRequestLookPeriodMs later.
  void looked(int64_t step, int64_t leader_ms);
  int64_t nextLook() const { return next_; }

 private:
  int64_t last_;
  int64_t next_;
};

}  // namespace ringtrain::train
