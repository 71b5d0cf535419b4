#include "train/checkpoint_request.h"

#include <algorithm>

namespace ringtrain::train {

CheckpointRequestSchedule::CheckpointRequestSchedule(int64_t start_step)
    : last_(start_step), next_(start_step + kFirstRequestLook) {}

void CheckpointRequestSchedule::looked(int64_t step, int64_t leader_ms) {
  const int64_t steps = std::max<int64_t>(step - last_, 1);
  // Integer arithmetic on figures every rank holds alike; a window under a millisecond counts as one. The
  // product fits: steps is at most kMaxStepsBetweenLooks, kRequestLookPeriodMs 1000.
  const int64_t every = kRequestLookPeriodMs * steps / std::max<int64_t>(leader_ms, 1);
  last_ = step;
  next_ = step + std::clamp<int64_t>(every, 1, kMaxStepsBetweenLooks);
}

}  // namespace ringtrain::train
