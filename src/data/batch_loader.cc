#include "ringtrain/data/batch_loader.h"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <ATen/Context.h>
#include <ATen/ops/empty.h>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::data {
namespace {
constexpr uint64_t kNegativesTag = 0x6e6567ULL;  // "neg"
constexpr auto kWaitSlice = std::chrono::milliseconds(100);
constexpr auto kStuckWorkerGrace = std::chrono::seconds(2);
// The loader state whose worker this thread is (stop() called from a worker only asks).
thread_local const void* t_worker_of = nullptr;
constexpr size_t kShardsKept = 3;  // epochs

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

namespace {

// Every rank takes the same number of steps an epoch, as many as the rank with the fewest pairs has
// batches: the pairs beyond that on the other ranks are not trained that epoch. Said when that is much.
void warnIfSharesAreUneven(const EpochShard& epoch0, int64_t used_per_rank) {
  int64_t total = 0;
  for (int64_t n : epoch0.rank_pairs) total += n;
  const int64_t used = used_per_rank * static_cast<int64_t>(epoch0.rank_pairs.size());
  if (total <= 0 || used >= total / 2) return;
  const auto [fewest, most] = std::minmax_element(epoch0.rank_pairs.begin(), epoch0.rank_pairs.end());
  warn("the ranks' shares of the training pairs are uneven (rank {} has {}, rank {} has {}; a few long lines?): "
       "an epoch is the fewest's batches on every rank, so {:.0f}% of the pairs are left out of each epoch",
       fewest - epoch0.rank_pairs.begin(), *fewest, most - epoch0.rank_pairs.begin(), *most,
       100.0 * static_cast<double>(total - used) / static_cast<double>(total));
}

}  // namespace

class BatchLoader::State {
 public:
  State(std::shared_ptr<const Corpus> corpus, std::shared_ptr<const CorpusSplit> split,
        const config::JobConfig& job, int rank, int world_size, LoaderPosition start, LoaderHooks hooks);
  // Starts loader.workers workers, each holding `self` (this state) until it returns.
  void startWorkers(const std::shared_ptr<State>& self);

  std::optional<Batch> next();
  LoaderPosition position() const;
  LoaderStats stats() const;
  void stop();
  void requestStop() noexcept { stop_flag_.store(true, std::memory_order_relaxed); }
  Batch build(int64_t epoch, int64_t step) const {
    return build(epoch, step, hold_before_.load(std::memory_order_relaxed), hold_after_.load(std::memory_order_relaxed));
  }
  Batch build(int64_t epoch, int64_t step, int64_t before, int64_t after) const;
  void holdNeighbourRows(int64_t before, int64_t after) {
    hold_before_.store(before, std::memory_order_relaxed);
    hold_after_.store(after, std::memory_order_relaxed);
  }

  const std::shared_ptr<const PairGenerator>& generator() const { return gen_; }
  int64_t stepsPerEpoch() const { return steps_per_epoch_; }
  int64_t totalBatches() const { return total_batches_; }

 private:
  struct Slot {
    int64_t index = -1;
    bool ready = false;
    std::optional<Batch> batch;
    std::exception_ptr error;
    double build_seconds = 0.0;
  };
  void workerLoop();
  std::shared_ptr<const EpochShard> shardFor(int64_t epoch, int rank) const;
  // Writes rows [first, first + count) of `rank`'s batch (epoch, step) into the three arrays.
  void fillRows(int64_t epoch, int64_t step, int rank, int64_t first, int64_t count, int64_t* center,
                int64_t* context, int64_t* negatives) const;
  void toDevice(Batch& batch) const;
  bool stopping() const { return stop_flag_.load(std::memory_order_relaxed); }

  std::shared_ptr<const Corpus> corpus_;
  std::shared_ptr<const CorpusSplit> split_;
  std::shared_ptr<const PairGenerator> gen_;
  LoaderHooks hooks_;
  int rank_;
  int world_size_;
  int first_rank_;  // the ranks whose batches one of this loader's holds: rank_ alone, or its neighbours too
  int last_rank_;
  std::atomic<int64_t> hold_before_{0};  // rows of first_rank_'s batch a batch holds (when it is not rank_)
  std::atomic<int64_t> hold_after_{0};   // rows of last_rank_'s
  int64_t batch_size_;
  int negatives_;
  int queue_depth_;
  int workers_wanted_;  // loader.workers; 0 builds batches in next()
  bool pin_memory_ = false;
  bool to_cuda_ = false;
  std::string device_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_batches_ = 0;

  std::atomic<bool> stop_flag_{false};
  mutable std::mutex shard_mu_;
  // Recent epochs: the shards of ranks first_rank_..last_rank_ of each (one pass builds them all); guarded by
  // shard_mu_
  struct EpochShards {
    int64_t epoch;
    std::vector<std::shared_ptr<const EpochShard>> by_rank;  // [rank - first_rank_]
  };
  mutable std::vector<EpochShards> shards_;
  // Builds them (a pass over the training lines).
  EpochShards makeShards(int64_t epoch) const;

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;  // consumer waits: a slot filled, or stop
  std::condition_variable space_cv_;  // workers wait: room to claim, or stop
  std::vector<std::unique_ptr<Slot>> slots_;  // ring of queue_depth slots by g % depth; guarded by mu_
  int64_t next_consume_ = 0;   // guarded by mu_
  int64_t next_claim_ = 0;     // guarded by mu_
  int64_t error_index_ = -1;   // first failed batch; guarded by mu_
  std::exception_ptr failed_;  // the error next() rethrew; rethrown again on later calls; guarded by mu_
  LoaderStats stats_;          // guarded by mu_
  std::vector<std::thread> workers_;  // started by startWorkers(), never resized after
  std::mutex join_mu_;                // held while stop() joins workers_
  int workers_running_ = 0;           // started and not yet returned; guarded by mu_
  bool worker_stuck_ = false;         // next() timed out waiting for a batch; guarded by mu_
  bool workers_left_behind_ = false;  // stop() detached stuck workers; guarded by mu_
  std::condition_variable finished_cv_;  // stop() waits: a worker returned
};

BatchLoader::State::State(std::shared_ptr<const Corpus> corpus, std::shared_ptr<const CorpusSplit> split,
                         const config::JobConfig& job, int rank, int world_size, LoaderPosition start,
                         LoaderHooks hooks)
    : corpus_(std::move(corpus)),
      split_(std::move(split)),
      hooks_(std::move(hooks)),
      rank_(rank),
      world_size_(world_size),
      first_rank_(job.ddp.balance ? std::max(0, rank - 1) : rank),
      last_rank_(job.ddp.balance ? std::min(world_size - 1, rank + 1) : rank),
      batch_size_(job.data.batch_size),
      negatives_(job.data.negatives),
      queue_depth_(std::max(1, job.loader.queue_depth)),
      workers_wanted_(std::max(0, job.loader.workers)),
      device_(job.run.device) {
  RT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "bad rank ", rank, " of world size ", world_size);
  RT_CHECK_T(ConfigError, batch_size_ >= 1, "data.batch_size must be >= 1");
  gen_ = std::make_shared<const PairGenerator>(corpus_, split_, PairOptions::from(job));
  shards_.push_back(makeShards(0));
  const EpochShard& shard0 = *shards_.front().by_rank[static_cast<size_t>(rank_ - first_rank_)];
  try {
    steps_per_epoch_ = data::stepsPerEpoch(shard0, batch_size_);
  } catch (const DataError& e) {
    const double subsample = gen_->options().subsample;
    if (subsample <= 0.0 || std::string_view(e.what()).find("data.subsample") != std::string_view::npos) throw;
    // On a small corpus, subsampling (word2vec's, tuned for billions of words) drops most of the pairs.
    RT_THROW(DataError, e.what(), " (data.subsample ", subsample, " dropped some of its items' pairs: 0 keeps them all)");
  }
  if (rank_ == 0) warnIfSharesAreUneven(shard0, steps_per_epoch_ * batch_size_);
  total_batches_ = job.run.max_steps > 0 ? job.run.max_steps * std::max(1, job.ddp.accumulation_steps)
                                         : job.run.epochs * steps_per_epoch_;

  const bool cuda = device_.rfind("cuda", 0) == 0;
  if (cuda) {
    RT_CHECK_T(ConfigError, at::hasCUDA(), "run.device is '", device_,
               "' but this LibTorch build has no CUDA device available");
    to_cuda_ = true;
  }
  const std::string& pin = job.loader.pin_memory;
  pin_memory_ = (pin == "on" || (pin == "auto" && cuda)) && at::hasCUDA();
  if (pin == "on" && !at::hasCUDA()) warn("loader.pin_memory is on, but there is no CUDA: using pageable memory");

  RT_CHECK_T(DataError, start.epoch >= 0 && start.step >= 0 && start.step <= steps_per_epoch_,
             "loader start position (epoch ", start.epoch, ", step ", start.step, ") is outside an epoch of ",
             steps_per_epoch_, " steps (did the corpus or the config change since the checkpoint?)");
  next_consume_ = next_claim_ = start.epoch * steps_per_epoch_ + start.step;

  holdNeighbourRows(neighbourRows(batch_size_), neighbourRows(batch_size_));
  const int64_t rows = batch_size_ + (last_rank_ - first_rank_) * neighbourRows(batch_size_);  // the most held
  stats_.bytes_per_batch = rows * (2 + negatives_) * static_cast<int64_t>(sizeof(int64_t));
  stats_.max_batches_held = workers_wanted_ > 0 ? queue_depth_ : 1;
  if (workers_wanted_ > 0) {
    slots_.reserve(static_cast<size_t>(queue_depth_));
    for (int i = 0; i < queue_depth_; ++i) slots_.push_back(std::make_unique<Slot>());
  }
}

void BatchLoader::State::startWorkers(const std::shared_ptr<State>& self) {
  workers_.reserve(static_cast<size_t>(workers_wanted_));
  try {
    for (int i = 0; i < workers_wanted_; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++workers_running_;
      }
      try {
        workers_.emplace_back([self] { self->workerLoop(); });
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        --workers_running_;
        throw;
      }
    }
  } catch (...) {  // a thread refused (EAGAIN): the ones started must end before the loader's constructor throws
    stop();
    throw;
  }
}

BatchLoader::BatchLoader(std::shared_ptr<const Corpus> corpus, std::shared_ptr<const CorpusSplit> split,
                         const config::JobConfig& job, int rank, int world_size, LoaderPosition start,
                         LoaderHooks hooks)
    : state_(std::make_shared<State>(std::move(corpus), std::move(split), job, rank, world_size, start,
                                     std::move(hooks))) {
  state_->startWorkers(state_);
}

BatchLoader::~BatchLoader() { stop(); }

void BatchLoader::stop() { state_->stop(); }
void BatchLoader::requestStop() noexcept { state_->requestStop(); }
std::optional<Batch> BatchLoader::next() { return state_->next(); }
LoaderPosition BatchLoader::position() const { return state_->position(); }
LoaderStats BatchLoader::stats() const { return state_->stats(); }
int64_t BatchLoader::stepsPerEpoch() const { return state_->stepsPerEpoch(); }
int64_t BatchLoader::totalBatches() const { return state_->totalBatches(); }
const PairGenerator& BatchLoader::generator() const { return *state_->generator(); }
Batch BatchLoader::build(int64_t epoch, int64_t step) const { return state_->build(epoch, step); }
Batch BatchLoader::build(int64_t epoch, int64_t step, int64_t before, int64_t after) const {
  return state_->build(epoch, step, before, after);
}
void BatchLoader::holdNeighbourRows(int64_t before, int64_t after) { state_->holdNeighbourRows(before, after); }

void BatchLoader::State::stop() {
  requestStop();
  {
    // Taking the lock orders the flag before any waiter's predicate check, so no wakeup is lost.
    std::lock_guard<std::mutex> lock(mu_);
  }
  ready_cv_.notify_all();
  space_cv_.notify_all();
  // A worker asking for the stop only asks: it cannot join itself, and waiting here for the join lock could
  // wait on a joiner that waits for this very thread.
  if (t_worker_of == this) return;
  // One joiner at a time: two threads joining one std::thread is undefined (stop() from another thread
  // while the owner destroys the loader).
  std::lock_guard<std::mutex> join_lock(join_mu_);
  {
    // After next() gave up on a stuck worker, joining it would hang the unwinding of that very error: the
    // workers get a moment to return, and those that do not are left behind. Each holds this state, so one
    // that wakes after the loader is gone finds it, sees the stop, and frees it on its way out.
    std::unique_lock<std::mutex> lock(mu_);
    if (workers_left_behind_) return;  // an earlier stop() did it
    if (worker_stuck_ && !finished_cv_.wait_for(lock, kStuckWorkerGrace, [this] { return workers_running_ == 0; })) {
      workers_left_behind_ = true;
      ringtrain::error("data loader: leaving {} stuck worker thread(s) behind", workers_running_);
      lock.unlock();
      for (auto& t : workers_) {
        if (t.joinable()) t.detach();
      }
      return;
    }
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
}

BatchLoader::State::EpochShards BatchLoader::State::makeShards(int64_t epoch) const {
  EpochShards shards{epoch, {}};
  for (EpochShard& shard : makeEpochShards(*gen_, epoch, first_rank_, last_rank_, world_size_)) {
    shards.by_rank.push_back(std::make_shared<const EpochShard>(std::move(shard)));
  }
  return shards;
}

std::shared_ptr<const EpochShard> BatchLoader::State::shardFor(int64_t epoch, int rank) const {
  const auto index = static_cast<size_t>(rank - first_rank_);
  std::lock_guard<std::mutex> lock(shard_mu_);
  for (const auto& s : shards_) {
    if (s.epoch == epoch) return s.by_rank[index];
  }
  shards_.push_back(makeShards(epoch));
  auto shard = shards_.back().by_rank[index];
  if (shards_.size() > kShardsKept) {
    auto oldest = std::min_element(shards_.begin(), shards_.end(),
                                   [](const auto& a, const auto& b) { return a.epoch < b.epoch; });
    shards_.erase(oldest);
  }
  return shard;
}

void BatchLoader::State::fillRows(int64_t epoch, int64_t step, int rank, int64_t first, int64_t count,
                                  int64_t* center, int64_t* context, int64_t* negatives) const {
  const auto shard = shardFor(epoch, rank);
  thread_local std::vector<Pair> pairs;
  thread_local LineCursor cursor;
  streamPairs(*gen_, *shard, step * batch_size_ + first, count, pairs, cursor);
  for (int64_t i = 0; i < count; ++i) {
    center[i] = pairs[i].center;
    context[i] = pairs[i].context;
  }
  if (negatives_ > 0) {
    Xoshiro256 rng(mixSeed({static_cast<uint64_t>(gen_->options().seed), static_cast<uint64_t>(epoch),
                            static_cast<uint64_t>(rank), static_cast<uint64_t>(step), kNegativesTag}));
    for (int64_t i = 0; i < first * negatives_; ++i) rng.next();  // one draw per negative (AliasSampler::sample)
    const AliasSampler& sampler = gen_->negativeSampler();
    for (int64_t i = 0; i < count * negatives_; ++i) negatives[i] = sampler.sample(rng);
  }
}

Batch BatchLoader::State::build(int64_t epoch, int64_t step, int64_t before, int64_t after) const {
  if (hooks_.before_build) hooks_.before_build(epoch, step, stop_flag_);
  auto options = at::TensorOptions().dtype(at::kLong);
  if (pin_memory_) options = options.pinned_memory(true);
  // (rank, first row, rows): the previous rank's last rows, this rank's batch, the next rank's first rows.
  const int64_t reach = neighbourRows(batch_size_);
  before = first_rank_ < rank_ ? std::clamp<int64_t>(before, 0, reach) : 0;
  after = last_rank_ > rank_ ? std::clamp<int64_t>(after, 0, reach) : 0;
  std::vector<std::array<int64_t, 3>> parts;
  if (before > 0) parts.push_back({first_rank_, batch_size_ - before, before});
  parts.push_back({rank_, 0, batch_size_});
  if (after > 0) parts.push_back({last_rank_, 0, after});
  int64_t rows = 0;
  for (const auto& part : parts) rows += part[2];
  Batch b;
  b.epoch = epoch;
  b.step = step;
  b.first_row = rank_ * batch_size_ - before;
  b.center = at::empty({rows}, options);
  b.context = at::empty({rows}, options);
  b.negatives = at::empty({rows, negatives_}, options);
  int64_t row = 0;
  for (const auto& [rank, first, count] : parts) {
    fillRows(epoch, step, static_cast<int>(rank), first, count, b.center.data_ptr<int64_t>() + row,
             b.context.data_ptr<int64_t>() + row, b.negatives.data_ptr<int64_t>() + row * negatives_);
    row += count;
  }
  return b;
}

void BatchLoader::State::toDevice(Batch& b) const {
  if (!to_cuda_) return;
  const at::Device device(device_);
  b.center = b.center.to(device, at::kLong, /*non_blocking=*/pin_memory_);
  b.context = b.context.to(device, at::kLong, /*non_blocking=*/pin_memory_);
  b.negatives = b.negatives.to(device, at::kLong, /*non_blocking=*/pin_memory_);
}

void BatchLoader::State::workerLoop() {
  t_worker_of = this;
  struct Finished {  // on every way out: stop() may be waiting to know
    State* loader;
    ~Finished() {
      std::lock_guard<std::mutex> lock(loader->mu_);
      --loader->workers_running_;
      loader->finished_cv_.notify_all();
    }
  } finished{this};
  while (true) {
    int64_t g = -1;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto can_claim = [this] { return next_claim_ < next_consume_ + queue_depth_; };
      auto done = [this] { return stopping() || next_claim_ >= total_batches_ || error_index_ >= 0; };
      while (!done() && !can_claim()) space_cv_.wait_for(lock, kWaitSlice);
      if (done()) return;
      g = next_claim_++;
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<Batch> batch;
    std::exception_ptr error;
    try {
      batch = build(g / steps_per_epoch_, g % steps_per_epoch_);
    } catch (...) {
      error = std::current_exception();
    }
    const double seconds = secondsSince(t0);
    {
      std::lock_guard<std::mutex> lock(mu_);
      Slot& slot = *slots_[static_cast<size_t>(g % queue_depth_)];
      slot.index = g;
      slot.ready = true;
      slot.batch = std::move(batch);
      slot.error = error;
      slot.build_seconds = seconds;
      if (error && (error_index_ < 0 || g < error_index_)) error_index_ = g;
    }
    ready_cv_.notify_all();
  }
}

std::optional<Batch> BatchLoader::State::next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::optional<Batch> batch;
  if (workers_.empty()) {
    int64_t g;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failed_) std::rethrow_exception(failed_);
      if (stopping() || next_consume_ >= total_batches_) return std::nullopt;
      g = next_consume_;
    }
    try {
      batch = build(g / steps_per_epoch_, g % steps_per_epoch_);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      failed_ = std::current_exception();
      throw;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping()) return std::nullopt;
    ++next_consume_;
    stats_.build_seconds += secondsSince(t0);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    if (failed_) std::rethrow_exception(failed_);
    if (next_consume_ >= total_batches_) return std::nullopt;
    const int64_t g = next_consume_;
    Slot& slot = *slots_[static_cast<size_t>(g % queue_depth_)];
    while (!stopping() && !(slot.ready && slot.index == g)) {
      ready_cv_.wait_for(lock, kWaitSlice);
      if (std::chrono::steady_clock::now() - t0 > hooks_.batch_timeout) {
        worker_stuck_ = true;
        RT_THROW(TimeoutError, "data loader: batch ", g % steps_per_epoch_, " of epoch ", g / steps_per_epoch_,
                 " not ready after ", hooks_.batch_timeout.count() / 1000.0, " s (a worker is stuck)");
      }
    }
    if (stopping()) return std::nullopt;
    slot.ready = false;
    slot.index = -1;
    stats_.build_seconds += slot.build_seconds;
    if (slot.error) {
      failed_ = slot.error;
      slot.error = nullptr;
      std::rethrow_exception(failed_);
    }
    batch = std::move(slot.batch);
    slot.batch.reset();
    ++next_consume_;
    lock.unlock();
    space_cv_.notify_all();
  }
  toDevice(*batch);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.batches += 1;
  stats_.pairs += batch_size_;
  stats_.wait_seconds += secondsSince(t0);
  return batch;
}

LoaderPosition BatchLoader::State::position() const {
  std::lock_guard<std::mutex> lock(mu_);
  return LoaderPosition{next_consume_ / steps_per_epoch_, next_consume_ % steps_per_epoch_};
}

LoaderStats BatchLoader::State::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace ringtrain::data
