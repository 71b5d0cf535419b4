// The prefetching batch loader: N worker threads build collated SGNS batches ahead of the trainer.
//
// Ordering: batches are numbered by a global index g = epoch * stepsPerEpoch() + step, and batch g is a
// pure function of (seed, epoch, rank, step) (see pair_generator.h). Workers claim indices in order and
// may finish out of order; the consumer takes g, g+1, ... in order, so the sequence of batches is the same
// for any number of workers (0 = built on the caller's thread inside next()).
// Bound: a worker claims g only while g < next-to-consume + queue_depth, so at most queue_depth batches
// (each batch_size * (2 + negatives) int64) exist at once.
// End: after run.epochs epochs, or, when run.max_steps > 0, after max_steps * ddp.accumulation_steps
// batches (continuing into further epochs if needed); then next() returns nullopt.
// Errors: an exception in a worker is stored with its batch index; the consumer's next() rethrows it
// (its type and message intact) when it reaches that batch; workers stop claiming after an error.
// Shutdown: stop() (or the destructor) from any thread wakes the consumer (next() returns nullopt) and
// the workers, and joins them (from a worker it only asks; after next() timed out on a stuck worker it gives
// the workers 2 s and leaves the ones still stuck behind, holding the loader's state until they return).
// stop() may come from several threads at once, but, like any call, not once the destructor has begun.
// requestStop() only sets an atomic flag (async-signal-safe, for a Ctrl-C handler); every wait re-checks it
// at least every 100 ms.
// Neighbours: with ddp.balance on, a batch also holds the last rows of rank r-1's batch of that step before
// its own, and the first rows of rank r+1's after it (where those ranks exist), each pair and its negatives
// exactly as that rank builds them, so the trainer can train the range of the step's pairs that
// src/train/work_balance.h gives it; Batch::first_row says where the rows start. How many: up to
// neighbourRows(B) each side (the most a cut moves), all of them until holdNeighbourRows() says fewer
// (building them costs the loader as much as its own rows).
// CUDA: with run.device cuda and loader.pin_memory auto|on (and a CUDA LibTorch with a device), workers
// fill pinned host tensors and next() copies them to the device with non_blocking=true.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include <ATen/core/Tensor.h>

#include "ringtrain/config/config.h"
#include "ringtrain/data/corpus.h"
#include "ringtrain/data/pair_generator.h"
#include "ringtrain/data/split.h"

namespace ringtrain::data {

// Rows of each neighbour's batch a batch holds under ddp.balance: as far as a cut between ranks may move.
constexpr int64_t neighbourRows(int64_t batch_size) { return batch_size / 2; }

struct Batch {
  at::Tensor center;     // int64 [B]
  at::Tensor context;    // int64 [B]
  at::Tensor negatives;  // int64 [B, K]
  // Row 0's place among the step's W * B pairs laid end to end in rank order: rank * B, less the rows of
  // rank - 1's batch it holds (see Neighbours above).
  int64_t first_row = 0;
  int64_t epoch = 0;
  int64_t step = 0;  // within the epoch
};

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t step = 0;  // the next batch to deliver
};

struct LoaderStats {
  int64_t batches = 0;          // delivered by next()
  int64_t pairs = 0;            // positive pairs delivered
  double wait_seconds = 0.0;    // time next() spent waiting for a batch (or building it, with 0 workers)
  double build_seconds = 0.0;   // summed over workers
  int64_t bytes_per_batch = 0;  // host bytes of one batch
  int64_t max_batches_held = 0; // queue_depth (or 1 with 0 workers): the memory bound in batches
};

// Test seams.
struct LoaderHooks {
  // Called by the builder before it builds batch (epoch, step); may throw, or block until `stopping`.
  std::function<void(int64_t epoch, int64_t step, const std::atomic<bool>& stopping)> before_build;
  // How long next() waits for one batch before it calls a worker stuck (TimeoutError). A batch takes
  // milliseconds; tests shorten it.
  std::chrono::milliseconds batch_timeout{600000};
};

class BatchLoader {
 public:
  BatchLoader(std::shared_ptr<const Corpus> corpus, std::shared_ptr<const CorpusSplit> split,
              const config::JobConfig& job, int rank, int world_size, LoaderPosition start = {},
              LoaderHooks hooks = {});
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch in order; nullopt at the end or after stop(). Rethrows a worker's exception.
  // One consumer thread at a time.
  std::optional<Batch> next();
  // Position of the next batch next() will return (what a checkpoint stores).
  LoaderPosition position() const;
  int64_t stepsPerEpoch() const;
  int64_t totalBatches() const;
  const PairGenerator& generator() const;
  LoaderStats stats() const;

  void stop();
  void requestStop() noexcept;

  // Under ddp.balance: batches built from now on hold the last `before` rows of the previous rank's batch and
  // the first `after` of the next's (each clamped to [0, neighbourRows(B)]). Any thread; batches already
  // built keep theirs.
  void holdNeighbourRows(int64_t before, int64_t after);

  // Builds batch (epoch, step) of this rank (with the neighbours' rows held, under ddp.balance) directly,
  // without the queue (what workers run); the second form with the given neighbours' rows (a batch built
  // before the trainer's range grew past them).
  Batch build(int64_t epoch, int64_t step) const;
  Batch build(int64_t epoch, int64_t step, int64_t before, int64_t after) const;

 private:
  // Everything the workers touch. Each worker holds a reference, so a worker left behind (see Shutdown) that
  // wakes after this object is gone still finds its state, and the last one out frees it.
  class State;
  std::shared_ptr<State> state_;
};

}  // namespace ringtrain::data
