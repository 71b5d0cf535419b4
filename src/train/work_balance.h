// Who trains which pairs of a step (ddp.balance): ranks that run slower per pair get fewer of them.
//
// A step's pairs are the W ranks' batches of B pairs, whoever trains them. Laid end to end in rank order they
// are cut into W contiguous ranges at cuts[0..W] (cuts[0] = 0, cuts[W] = W * B); rank r trains rows
// [cuts[r], cuts[r + 1]). Even cuts (j * B) give every rank its own batch: the job without balancing.
// The gradient is the same mean over the step's W * B pairs whatever the cuts, since each rank scales its
// mean loss by its share (count / B) before the ranks average; only the order of the float sums changes, so
// a balanced run is not bit-for-bit reproducible, where an unbalanced one is.
//
// Every kBalanceWindow steps (of the job's step count, so a resumed run decides at the same steps) the ranks
// gather each one's forward+backward seconds per pair (the median of the window's steps: a rank descheduled
// for one step is jitter, not a slower CPU) and move the cuts halfway towards shares proportional to speed;
// at the fixed point the ranks take equal time. Bounds: a cut stays within B / 2 of j * B, so a rank's range
// lies inside its own and its neighbours' batches (what the loader builds for it with ddp.balance on), and
// every rank keeps at least B / 4 pairs.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ringtrain::comm {
class Communicator;
}

namespace ringtrain::train {

inline constexpr int64_t kBalanceWindow = 10;  // steps between two decisions

std::vector<int64_t> evenCuts(int world_size, int64_t batch);

// The next cuts from the current ones and each rank's seconds per pair over the last window. Every rank
// calls it with the same gathered figures and gets the same cuts. A figure that is not a positive finite
// number (a rank that trained nothing) counts as the ranks' median.
std::vector<int64_t> rebalancedCuts(const std::vector<int64_t>& cuts, const std::vector<double>& seconds_per_pair,
                                    int64_t batch);

// One rank's side: its range, the timings it records, and the collective that moves the cuts.
class WorkBalance {
 public:
  // `enabled` false, one rank, or a batch of one pair (nothing to cut): the cuts stay even and endStep()
  // does nothing.
  WorkBalance(comm::Communicator& comm, int64_t batch, bool enabled);

  bool enabled() const { return enabled_; }
  // Why balancing was asked for and is off ("" when it is on or was not asked for), for the job's log.
  const std::string& whyOff() const { return why_off_; }
  int64_t begin() const { return cuts_[rank_]; }  // this rank's first row among the step's W * B
  int64_t count() const { return cuts_[rank_ + 1] - cuts_[rank_]; }
  double lossScale() const { return static_cast<double>(count()) / static_cast<double>(batch_); }
  const std::vector<int64_t>& cuts() const { return cuts_; }

  // Forward+backward time of this rank's range in one micro-batch.
  void record(double seconds, int64_t pairs);
  // After optimizer step `step` (the job's count, from 1) of `last_step`, on every rank at once: when `step`
  // is a multiple of kBalanceWindow, a collective over the ranks' timings, then new cuts; none after the
  // last step, whose cuts are the ones the job ends with. True when they moved.
  bool endStep(int64_t step, int64_t last_step);
  // Whether endStep(step, last_step) decides (on any rank: the same for all).
  static bool decidesAfter(int64_t step, int64_t last_step) { return step % kBalanceWindow == 0 && step < last_step; }
  // Rows of the previous and the next rank's batch this rank's range takes, each with a margin of B / 16 for
  // the next moves: what the loader should build beside the rank's own batch.
  std::pair<int64_t, int64_t> neighbourRowsToHold() const;
  // Whether a batch whose rows start at `first_row` and number `rows` holds this rank's range.
  bool covers(int64_t first_row, int64_t rows) const { return first_row <= begin() && begin() + count() <= first_row + rows; }
  // "rank 0 1536, rank 1 512" (pairs per micro-batch), for the job's summary.
  std::string describe() const;

  // The cuts as a checkpoint keeps them ("0 1536 2048"), so that a resumed run goes on with the shares it had
  // learnt instead of starting even again.
  std::string encodeCuts() const;
  // On every rank alike, before the first step: takes the cuts a checkpoint kept when they fit this job (as
  // many ranks, the same batch, within the bounds above); true when they did. Anything else leaves them even.
  bool restoreCuts(const std::string& encoded);

 private:
  comm::Communicator& comm_;
  int64_t batch_;
  std::string why_off_;
  bool enabled_;
  int rank_;
  std::vector<int64_t> cuts_;
  double slowdown_ = 1.0;  // RINGTRAIN_BALANCE_SLOWDOWN=rank:factor on this rank (a test seam)
  double step_seconds_ = 0.0;  // this step's micro-batches so far
  int64_t step_pairs_ = 0;
  std::vector<double> window_;  // seconds per pair of each step of the window
};

}  // namespace ringtrain::train
