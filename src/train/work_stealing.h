// Who trains which pairs of a step, decided while it runs (ddp.steal): a rank that is done with its own batch
// takes pairs of the batches other ranks have not reached yet.
//
// Why: at 8 ranks on shared vCPUs a step lasts as long as its slowest rank, and which rank that is changes
// from step to step (one descheduled for a few milliseconds, one on a busier core): shares fixed before the
// step (ddp.balance, work_balance.h) follow the ranks' usual speed, not this step's. Here no rank waits while
// pairs of the step are left: the step ends when the last chunk anyone took is done.
//
// How: the ranks share a host (comm.canReadPeerMemory()) and map one buffer: for each of two steps in flight
// (by parity) and each rank, that rank's batch and a counter, the first of its rows nobody has taken. A rank
// publishes its batch of step s + 1 at the start of step s (the loader has it queued), so every batch of a
// step is there before any rank starts it. In the step, a rank takes rows of its own batch, then of the batch
// with the most rows left, each time about half of what is left of it (at least ddp.steal_min_pairs), by one
// compare-and-swap on that counter, copies them out and trains them (forward, backward under noSync()). Its
// last backward synchronizes: a rank takes its next chunk between a chunk's forward and its backward, and when
// there is none that backward is the synchronized one; a rank that finds nothing at all (every row taken
// before it came) trains one pair weighted zero for its synchronized backward (zero gradients: the sums do not
// change). A rank's first take of its own batch leaves 2 * ddp.steal_min_pairs rows for the end of the step,
// where they even out the ranks' finishing times: each pass costs a fixed overhead (LibTorch's dispatch, the
// hooks), so a rank on time runs three passes. Each chunk's mean loss is weighted by
// its share of a batch (pairs / B), so the ranks' average is the mean over the step's W * B pairs whoever
// trained them: the same gradient as without stealing, summed in another order (not bit for bit, which is why
// it needs run.deterministic false).
//
// Why the buffer can be reused: slot s % 2 is written again at the start of step s + 1 by its owner, which
// has then finished step s's synchronization; that needed every rank's gradients of step s, which each rank
// sends only after its last read of step s's counters and rows. So no rank still reads what is overwritten.
// Checked, not only argued: each rank marks the steps it is done reading (finish()), and publish() refuses to
// overwrite a step some rank has not finished.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace ringtrain::comm {
class Communicator;
}
namespace ringtrain::data {
struct Batch;
}

namespace ringtrain::train {

// How many of `left` rows (of `batch`) one claim takes: about half, at least `min_pairs`, at most `left`; the
// owner's first take of its untouched batch all but 2 * min_pairs of it.
int64_t claimSize(int64_t left, int64_t batch, int64_t min_pairs, bool owner);

// Rows [begin, begin + count) of rank `owner`'s batch of one step.
struct Chunk {
  int owner = 0;
  int64_t begin = 0;
  int64_t count = 0;
};

// The pairs of a chunk, copied out of the shared buffer.
struct ChunkPairs {
  at::Tensor center, context, negatives;  // [n], [n], [n, K]
};

struct StealStats {
  int64_t chunks = 0;         // trained by this rank, null ones left out
  int64_t pairs = 0;          // in those chunks
  int64_t pairs_stolen = 0;   // of them, from other ranks' batches
  int64_t null_chunks = 0;    // steps this rank ended with the zero-weighted pair
};

class WorkStealing {
 public:
  // `enabled` false, one rank, or ranks that cannot map each other's memory: off, and nothing is shared
  // (whyOff() says why when it was asked for). Otherwise collective over `comm`: maps the buffer.
  WorkStealing(comm::Communicator& comm, int64_t batch, int64_t negatives, int64_t min_pairs, bool enabled);
  // Over a buffer the caller already shares between the ranks (one initialBuffer()), for tests whose ranks are
  // threads.
  WorkStealing(int rank, int world_size, int64_t batch, int64_t negatives, int64_t min_pairs, at::Tensor buffer);

  // The buffer as it starts: no batch offered.
  static at::Tensor initialBuffer(int world_size, int64_t batch, int64_t negatives);

  bool enabled() const { return enabled_; }
  const std::string& whyOff() const { return why_off_; }

  // This rank's batch of step `step` (the job's count, from 0), B pairs: copied into its slot, then offered.
  // Throws, naming the rank, when a rank has not finished step - 2, whose slot this overwrites.
  void publish(int64_t step, const data::Batch& batch);
  // This rank reads nothing more of step `step` (after its last claim and its last pairs(), before anything
  // of the step leaves it).
  void finish(int64_t step);
  // The next chunk of step `step` this rank trains: from its own batch while rows are left, then from the
  // batch with the most rows left; nullopt when none has any.
  std::optional<Chunk> claim(int64_t step);
  ChunkPairs pairs(int64_t step, const Chunk& chunk) const;
  // Chunk weight in the ranks' average: its share of one batch.
  double lossScale(const Chunk& chunk) const { return static_cast<double>(chunk.count) / static_cast<double>(batch_); }

  // What this rank trained, for the job's summary.
  void count(const Chunk& chunk);
  void countNullChunk() { ++stats_.null_chunks; }
  const StealStats& stats() const { return stats_; }
  int64_t batch() const { return batch_; }

  // RINGTRAIN_STEAL_SLOWDOWN=R:F[:L]: rank R sleeps F - 1 times each chunk's time after it, and L
  // milliseconds before its first claim of each step (a test seam, so that the other ranks have something to
  // take on any machine, or everything); 1 and 0 elsewhere.
  double slowdown() const { return slowdown_; }
  double lateMillis() const { return late_ms_; }

 private:
  int64_t* counter(int64_t step, int owner) const;
  int64_t* finished(int rank) const;  // the last step `rank` finished reading, -1 before any
  int64_t slotOffset(int64_t step, int owner) const;

  int rank_ = 0;
  int world_ = 1;
  int64_t batch_ = 0;
  int64_t negatives_ = 0;
  int64_t min_pairs_ = 1;
  bool enabled_ = false;
  std::string why_off_;
  at::Tensor buffer_;  // int64: counters (one per 64 bytes), then slots; see the file's comment
  double slowdown_ = 1.0;
  double late_ms_ = 0.0;
  int64_t first_published_ = -1;  // the step of this rank's first publish(): nothing to overwrite before step + 2
  StealStats stats_;
};

}  // namespace ringtrain::train
