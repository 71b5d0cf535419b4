#include "train/work_stealing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <tuple>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ddp/host_shared_tensor.h"
#include "ringtrain/comm/communicator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/batch_loader.h"

namespace ringtrain::train {
namespace {

constexpr int64_t kCounterStride = 8;  // int64 per counter: one 64-byte line each, so claims do not collide
constexpr int64_t kSteps = 2;          // steps in flight: the one trained and the next, published

// The counters of both steps, then each rank's finished-step mark, each on its own line.
int64_t counterElements(int world) { return (kSteps + 1) * world * kCounterStride; }
int64_t slotElements(int64_t batch, int64_t negatives) { return batch * (2 + negatives); }

// RINGTRAIN_STEAL_SLOWDOWN=R:F[:L] (the tests' seam; see slowdown()): {factor, late milliseconds} for this
// rank. Said in the log where it acts: left set by mistake, it would slow a real job down.
std::pair<double, double> slowdownOf(int rank, int world) {
  const char* v = std::getenv("RINGTRAIN_STEAL_SLOWDOWN");
  if (v == nullptr || *v == '\0') return {1.0, 0.0};
  int r = -1, end2 = -1, end3 = -1;
  double f = 0.0, late = 0.0;
  // %n after each form: the whole text must be read ("1:3x" is not 1:3).
  const bool whole = (std::sscanf(v, "%d:%lf%n", &r, &f, &end2) == 2 && v[end2] == '\0') ||
                     (std::sscanf(v, "%d:%lf:%lf%n", &r, &f, &late, &end3) == 3 && v[end3] == '\0');
  RT_CHECK_T(ConfigError, whole && r >= 0 && f >= 1.0 && f <= 1000.0 && late >= 0.0 && late <= 60000.0,
             "RINGTRAIN_STEAL_SLOWDOWN '", v, "' is not RANK:FACTOR[:LATE_MS] (a rank, a factor from 1 to 1000, and "
             "milliseconds from 0 to 60000)");
  RT_CHECK_T(ConfigError, r < world, "RINGTRAIN_STEAL_SLOWDOWN '", v, "' names rank ", r, " of a job of ", world,
             " ranks");
  if (r != rank || (f == 1.0 && late == 0.0)) return {1.0, 0.0};
  warn("RINGTRAIN_STEAL_SLOWDOWN: this rank sleeps {}{}{} (a test setting: unset it for real jobs)",
       f > 1.0 ? fmt::format("{:g} times each chunk's time after it", f - 1.0) : "", f > 1.0 && late > 0 ? " and " : "",
       late > 0 ? fmt::format("{:g} ms before each step's first claim", late) : "");
  return {f, late};
}

}  // namespace

int64_t claimSize(int64_t left, int64_t batch, int64_t min_pairs, bool owner) {
  if (owner && left == batch) return std::max(std::min(left, min_pairs), left - 2 * min_pairs);
  return std::min(left, std::max(min_pairs, (left + 1) / 2));
}

at::Tensor WorkStealing::initialBuffer(int world_size, int64_t batch, int64_t negatives) {
  at::Tensor buffer = at::zeros({counterElements(world_size) + kSteps * world_size * slotElements(batch, negatives)},
                                at::TensorOptions().dtype(at::kLong));
  // A counter at `batch`: every row taken, which is what a batch not yet published must look like.
  at::Tensor lines = buffer.narrow(0, 0, counterElements(world_size)).view({-1, kCounterStride}).select(1, 0);
  lines.narrow(0, 0, kSteps * world_size).fill_(batch);
  lines.narrow(0, kSteps * world_size, world_size).fill_(-1);  // no step finished
  return buffer;
}

WorkStealing::WorkStealing(comm::Communicator& comm, int64_t batch, int64_t negatives, int64_t min_pairs,
                           bool enabled)
    : rank_(comm.rank()), world_(comm.size()), batch_(batch), negatives_(negatives), min_pairs_(min_pairs) {
  if (!enabled) return;
  if (world_ == 1) {
    why_off_ = "one rank has nobody to share its pairs with";
    return;
  }
  if (!comm.canReadPeerMemory()) {
    why_off_ = "the ranks cannot map each other's memory (ranks on several hosts, comm.same_host_copy off, or "
               "an OS that refuses process_vm_readv)";
    return;
  }
  std::string why;
  buffer_ = ddp::detail::tryShareOnHost(comm, initialBuffer(world_, batch_, negatives_), "work-stealing batches", why);
  if (!buffer_.defined()) {
    why_off_ = why;  // every rank got the same answer: all go on without it
    return;
  }
  enabled_ = true;
  std::tie(slowdown_, late_ms_) = slowdownOf(rank_, world_);
}

WorkStealing::WorkStealing(int rank, int world_size, int64_t batch, int64_t negatives, int64_t min_pairs,
                           at::Tensor buffer)
    : rank_(rank), world_(world_size), batch_(batch), negatives_(negatives), min_pairs_(min_pairs),
      enabled_(true), buffer_(std::move(buffer)) {
  RT_CHECK_EQ(buffer_.numel(), initialBuffer(world_, batch_, negatives_).numel(), "work stealing: buffer size");
  std::tie(slowdown_, late_ms_) = slowdownOf(rank_, world_);
}

int64_t* WorkStealing::counter(int64_t step, int owner) const {
  return buffer_.data_ptr<int64_t>() + ((step % kSteps) * world_ + owner) * kCounterStride;
}

int64_t* WorkStealing::finished(int rank) const {
  return buffer_.data_ptr<int64_t>() + (kSteps * world_ + rank) * kCounterStride;
}

int64_t WorkStealing::slotOffset(int64_t step, int owner) const {
  return counterElements(world_) + ((step % kSteps) * world_ + owner) * slotElements(batch_, negatives_);
}

void WorkStealing::publish(int64_t step, const data::Batch& batch) {
  RT_CHECK(batch.center.size(0) == batch_ && batch.negatives.dim() == 2 && batch.negatives.size(1) == negatives_,
           "work stealing: a batch of ", batch.center.size(0), " pairs with ", batch.negatives.sizes(),
           " negatives, expected ", batch_, " pairs with ", negatives_, " negatives each");
  if (first_published_ < 0) first_published_ = step;
  if (step - 2 >= first_published_) {
    // The slot holds step - 2's batch: every rank must be done reading it (see the header's last paragraph).
    for (int r = 0; r < world_; ++r) {
      const int64_t done = __atomic_load_n(finished(r), __ATOMIC_ACQUIRE);
      RT_CHECK(done >= step - 2, "work stealing: rank ", rank_, " would overwrite its batch of step ", step - 2,
               " while rank ", r, " has not finished reading that step (it finished step ", done,
               "): the synchronization of step ", step - 1, " did not wait for every rank");
    }
  }
  at::Tensor slot = buffer_.narrow(0, slotOffset(step, rank_), slotElements(batch_, negatives_));
  slot.narrow(0, 0, batch_).copy_(batch.center);
  slot.narrow(0, batch_, batch_).copy_(batch.context);
  slot.narrow(0, 2 * batch_, batch_ * negatives_).view({batch_, negatives_}).copy_(batch.negatives);
  // Release: a rank whose claim reads 0 here reads the rows above as written.
  __atomic_store_n(counter(step, rank_), int64_t{0}, __ATOMIC_RELEASE);
}

void WorkStealing::finish(int64_t step) { __atomic_store_n(finished(rank_), step, __ATOMIC_RELEASE); }

std::optional<Chunk> WorkStealing::claim(int64_t step) {
  // Own rows first (they are what nobody else would miss); then the batch with the most left, so that a
  // late rank's rows go to whoever is free, in large pieces while there are many.
  while (true) {
    int owner = rank_;
    int64_t taken = __atomic_load_n(counter(step, rank_), __ATOMIC_ACQUIRE);
    if (taken >= batch_) {
      owner = -1;
      int64_t most_left = 0;
      for (int r = 0; r < world_; ++r) {
        const int64_t t = __atomic_load_n(counter(step, r), __ATOMIC_ACQUIRE);
        if (batch_ - t > most_left) {
          most_left = batch_ - t;
          owner = r;
          taken = t;
        }
      }
      if (owner < 0) return std::nullopt;
    }
    const int64_t n = claimSize(batch_ - taken, batch_, min_pairs_, owner == rank_);
    // Another rank may take rows of this batch between the load and here: then look again.
    if (__atomic_compare_exchange_n(counter(step, owner), &taken, taken + n, /*weak=*/false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      return Chunk{owner, taken, n};
    }
  }
}

ChunkPairs WorkStealing::pairs(int64_t step, const Chunk& chunk) const {
  RT_CHECK(chunk.owner >= 0 && chunk.owner < world_ && chunk.begin >= 0 && chunk.count > 0 &&
               chunk.begin + chunk.count <= batch_,
           "work stealing: rows [", chunk.begin, ", +", chunk.count, ") of rank ", chunk.owner, "'s batch");
  // Copied out, so that nothing the model keeps for its backward points into memory the owner rewrites.
  const at::Tensor slot = buffer_.narrow(0, slotOffset(step, chunk.owner), slotElements(batch_, negatives_));
  ChunkPairs p;
  p.center = slot.narrow(0, chunk.begin, chunk.count).clone();
  p.context = slot.narrow(0, batch_ + chunk.begin, chunk.count).clone();
  p.negatives = slot.narrow(0, 2 * batch_ + chunk.begin * negatives_, chunk.count * negatives_)
                    .view({chunk.count, negatives_})
                    .clone();
  return p;
}

void WorkStealing::count(const Chunk& chunk) {
  ++stats_.chunks;
  stats_.pairs += chunk.count;
  if (chunk.owner != rank_) stats_.pairs_stolen += chunk.count;
}

}  // namespace ringtrain::train
