#include "ringtrain/data/pair_generator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "ringtrain/core/error.h"

namespace ringtrain::data {
namespace {
constexpr uint64_t kPairTag = 0x7061697273ULL;   // "pairs"
constexpr uint64_t kShardTag = 0x7368617264ULL;  // "shard"
}  // namespace

LineCounting lineCountingOf(ContextMode mode) {
  return mode == ContextMode::kBasket ? LineCounting::kBasketsAsSets : LineCounting::kEveryListing;
}

PairOptions PairOptions::from(const config::JobConfig& job) {
  PairOptions o;
  o.mode = job.data.context == "basket" ? ContextMode::kBasket : ContextMode::kWindow;
  o.window = job.data.window;
  o.direction = job.data.direction == "forward" ? Direction::kForward : Direction::kBoth;
  o.subsample = job.data.subsample;
  o.negatives = job.data.negatives;
  o.ns_exponent = job.data.ns_exponent;
  o.seed = job.run.seed;
  return o;
}

namespace {
uint64_t nextGeneratorId() {
  static std::atomic<uint64_t> next{1};  // 0 is LinePairs' "none"
  return next.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

PairGenerator::PairGenerator(std::shared_ptr<const Corpus> corpus, std::shared_ptr<const CorpusSplit> split,
                             const PairOptions& options)
    : corpus_(std::move(corpus)), split_(std::move(split)), options_(options), id_(nextGeneratorId()) {
  RT_CHECK(corpus_ && split_, "PairGenerator needs a corpus and a split");
  RT_CHECK_T(ConfigError, options_.window >= 1, "data.window must be >= 1");
  RT_CHECK_T(ConfigError, options_.negatives >= 0, "data.negatives must be >= 0");
  RT_CHECK_T(ConfigError, options_.mode == ContextMode::kWindow || options_.direction == Direction::kBoth,
             "data.direction forward needs data.context window");
  const std::vector<int64_t> counts = trainCounts(*corpus_, *split_, lineCountingOf(options_.mode));
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  RT_CHECK_T(DataError, total > 0, corpus_->path(),
             options_.mode == ContextMode::kBasket ? ": no training basket holds two different items"
                                                   : ": no training tokens");
  if (options_.subsample > 0.0) {
    keep_.resize(counts.size(), 1.0f);
    const double s = options_.subsample;
    for (size_t i = 0; i < counts.size(); ++i) {
      if (counts[i] == 0) continue;
      const double f = static_cast<double>(counts[i]) / static_cast<double>(total);
      keep_[i] = static_cast<float>(std::min(1.0, (std::sqrt(f / s) + 1.0) * s / f));
    }
  }
  std::vector<double> weights(counts.size());
  // Items absent from training are never negatives (pow(0, e) would be 1 at e = 0 and inf below).
  for (size_t i = 0; i < counts.size(); ++i) {
    weights[i] = counts[i] > 0 ? std::pow(static_cast<double>(counts[i]), options_.ns_exponent) : 0.0;
  }
  negatives_ = AliasSampler(weights);
}

namespace {

// A basket is a set: a product on two order lines of one basket is one item there, else the basket pairs
// it with itself. `out` gets the first time each item appears, in line order; `sorted` is scratch. Most
// baskets hold no repeat, and then the sort is all it costs.
void firstOccurrences(const LineView& items, std::vector<int32_t>& out, std::vector<int32_t>& sorted) {
  sorted.assign(items.begin(), items.end());
  std::sort(sorted.begin(), sorted.end());
  out.clear();
  if (std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end()) {
    out.assign(items.begin(), items.end());
    return;
  }
  std::vector<bool> taken(sorted.size(), false);  // by the item's first place in `sorted`
  for (int32_t id : items) {
    const auto at = static_cast<size_t>(std::lower_bound(sorted.begin(), sorted.end(), id) - sorted.begin());
    if (taken[at]) continue;
    taken[at] = true;
    out.push_back(id);
  }
}

}  // namespace

Xoshiro256 PairGenerator::keptItems(int64_t line, int64_t epoch, std::vector<int32_t>& kept) const {
  Xoshiro256 rng(mixSeed({static_cast<uint64_t>(options_.seed), static_cast<uint64_t>(epoch),
                          static_cast<uint64_t>(line), kPairTag}));
  LineView v = split_->trainTokens(*corpus_, line);
  if (options_.mode == ContextMode::kBasket) {
    thread_local std::vector<int32_t> distinct, sorted;
    firstOccurrences(v, distinct, sorted);
    v = LineView{distinct.data(), static_cast<int64_t>(distinct.size())};
  }
  kept.clear();
  if (keep_.empty()) {
    kept.assign(v.begin(), v.end());
  } else {
    for (int32_t id : v) {
      const float p = keep_[id];
      if (p >= 1.0f || rng.uniform() < p) kept.push_back(id);
    }
  }
  return rng;
}

namespace {

// Window mode, center i of m kept items: its half-width b (the stream's one draw for it), how many pairs it
// gives, and those pairs (nearest first, left then right).
int64_t drawHalfWidth(Xoshiro256& rng, int window) {
  return static_cast<int64_t>(1 + rng.below(static_cast<uint64_t>(window)));
}
int64_t windowCount(int64_t i, int64_t m, int64_t b, bool both) {
  return (both ? std::min(i, b) : 0) + std::min(m - 1 - i, b);
}
void windowPairs(const int32_t* items, int64_t m, int64_t i, int64_t b, bool both, std::vector<Pair>& out) {
  const int32_t c = items[i];
  for (int64_t d = 1; d <= b; ++d) {
    if (both && i - d >= 0) out.push_back({c, items[i - d]});
    if (i + d < m) out.push_back({c, items[i + d]});
  }
}

// Basket mode: `cap` others per center by a partial Fisher-Yates over positions 0..m-2 (position j stands
// for item j, or j + 1 at and after the center); `pos` stays a permutation from center to center, starting
// as the identity (resetBasket).
int64_t basketCap(int64_t m, int window) { return std::min<int64_t>(m - 1, 2 * static_cast<int64_t>(window)); }
void resetBasket(int64_t m, std::vector<int32_t>& pos) {
  pos.resize(static_cast<size_t>(m - 1));
  for (int64_t j = 0; j < m - 1; ++j) pos[j] = static_cast<int32_t>(j);
}
void basketPairs(const int32_t* items, int64_t m, int64_t i, int64_t cap, int32_t* pos, Xoshiro256& rng,
                 std::vector<Pair>& out) {
  for (int64_t k = 0; k < cap; ++k) {
    if (cap < m - 1) std::swap(pos[k], pos[k + static_cast<int64_t>(rng.below(static_cast<uint64_t>(m - 1 - k)))]);
    const int64_t j = pos[k];
    out.push_back({items[i], items[j < i ? j : j + 1]});
  }
}

}  // namespace

int64_t PairGenerator::countPairs(int64_t line, int64_t epoch) const {
  thread_local std::vector<int32_t> kept;
  Xoshiro256 rng = keptItems(line, epoch, kept);
  const auto m = static_cast<int64_t>(kept.size());
  if (m < 2) return 0;
  if (options_.mode == ContextMode::kBasket) return m * basketCap(m, options_.window);
  const bool both = options_.direction == Direction::kBoth;
  int64_t n = 0;
  for (int64_t i = 0; i < m; ++i) n += windowCount(i, m, drawHalfWidth(rng, options_.window), both);
  return n;
}

void PairGenerator::linePairs(int64_t line, int64_t epoch, std::vector<Pair>& out,
                              std::vector<int32_t>& scratch) const {
  Xoshiro256 rng = keptItems(line, epoch, scratch);
  const auto m = static_cast<int64_t>(scratch.size());
  if (m < 2) return;
  if (options_.mode == ContextMode::kWindow) {
    const bool both = options_.direction == Direction::kBoth;
    for (int64_t i = 0; i < m; ++i) windowPairs(scratch.data(), m, i, drawHalfWidth(rng, options_.window), both, out);
    return;
  }
  thread_local std::vector<int32_t> pos;
  resetBasket(m, pos);
  const int64_t cap = basketCap(m, options_.window);
  for (int64_t i = 0; i < m; ++i) basketPairs(scratch.data(), m, i, cap, pos.data(), rng, out);
}

bool LineCursor::reads(const PairGenerator& gen, int64_t line, int64_t epoch) const {
  return generator_ == gen.id() && line_ == line && epoch_ == epoch;
}

void LineCursor::start(const PairGenerator& gen, int64_t line, int64_t epoch) {
  generator_ = 0;  // until it is whole: keptItems may throw midway
  rng_ = gen.keptItems(line, epoch, kept_);
  const PairOptions& o = gen.options();
  basket_ = o.mode == ContextMode::kBasket;
  both_ = o.direction == Direction::kBoth;
  window_ = o.window;
  const auto m = static_cast<int64_t>(kept_.size());
  if (basket_ && m >= 2) resetBasket(m, pos_);
  next_center_ = m >= 2 ? 0 : m;  // a line of fewer than 2 items has no pairs
  center_.clear();
  center_at_ = 0;
  position_ = 0;
  generator_ = gen.id();
  line_ = line;
  epoch_ = epoch;
}

bool LineCursor::nextCenter(int64_t skip_up_to, int64_t& skipped) {
  skipped = 0;
  const auto m = static_cast<int64_t>(kept_.size());
  RT_CHECK_LT(next_center_, m, "LineCursor: read past the end of line ", line_, " (epoch ", epoch_, ")");
  const int64_t i = next_center_++;
  center_.clear();
  center_at_ = 0;
  if (basket_) {  // every center moves the permutation: generated even when passed over
    basketPairs(kept_.data(), m, i, basketCap(m, window_), pos_.data(), rng_, center_);
    return true;
  }
  const int64_t b = drawHalfWidth(rng_, window_);
  const int64_t count = windowCount(i, m, b, both_);
  if (count <= skip_up_to) {  // passed over whole: only its one draw
    skipped = count;
    return false;
  }
  windowPairs(kept_.data(), m, i, b, both_, center_);
  return true;
}

void LineCursor::skip(int64_t n) {
  while (n > 0) {
    if (center_at_ == center_.size()) {
      int64_t skipped = 0;
      if (!nextCenter(n, skipped)) {
        n -= skipped;
        position_ += skipped;
        continue;
      }
    }
    const int64_t k = std::min<int64_t>(n, static_cast<int64_t>(center_.size() - center_at_));
    center_at_ += static_cast<size_t>(k);
    position_ += k;
    n -= k;
  }
}

void LineCursor::take(int64_t n, std::vector<Pair>& out) {
  while (n > 0) {
    if (center_at_ == center_.size()) {
      int64_t skipped = 0;
      nextCenter(0, skipped);
      continue;  // a center without pairs (window, forward: the last) was passed over
    }
    const int64_t k = std::min<int64_t>(n, static_cast<int64_t>(center_.size() - center_at_));
    out.insert(out.end(), center_.begin() + static_cast<std::ptrdiff_t>(center_at_),
               center_.begin() + static_cast<std::ptrdiff_t>(center_at_) + k);
    center_at_ += static_cast<size_t>(k);
    position_ += k;
    n -= k;
  }
}

EpochShard makeEpochShard(const PairGenerator& gen, int64_t epoch, int rank, int world_size) {
  return std::move(makeEpochShards(gen, epoch, rank, rank, world_size).front());
}

std::vector<EpochShard> makeEpochShards(const PairGenerator& gen, int64_t epoch, int first_rank, int last_rank,
                                        int world_size) {
  RT_CHECK(world_size >= 1 && first_rank >= 0 && first_rank <= last_rank && last_rank < world_size, "bad ranks ",
           first_rank, "..", last_rank, " of ", world_size);
  std::vector<int64_t> order = gen.split().trainLines();
  Xoshiro256 rng(mixSeed({static_cast<uint64_t>(gen.options().seed), static_cast<uint64_t>(epoch), kShardTag}));
  for (auto i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
    std::swap(order[i], order[rng.below(static_cast<uint64_t>(i + 1))]);
  }
  std::vector<EpochShard> shards(static_cast<size_t>(last_rank - first_rank + 1));
  std::vector<int64_t> rank_pairs(static_cast<size_t>(world_size), 0);
  for (EpochShard& shard : shards) {
    shard.epoch = epoch;
    shard.lines.reserve(order.size() / world_size + 1);
    shard.pair_end.reserve(order.size() / world_size + 1);
  }
  for (size_t p = 0; p < order.size(); ++p) {
    const int64_t n = gen.countPairs(order[p], epoch);
    const int r = static_cast<int>(p % static_cast<size_t>(world_size));
    rank_pairs[r] += n;
    if (r >= first_rank && r <= last_rank) {
      EpochShard& shard = shards[static_cast<size_t>(r - first_rank)];
      shard.lines.push_back(order[p]);
      shard.pair_end.push_back(rank_pairs[r]);
    }
  }
  for (EpochShard& shard : shards) shard.rank_pairs = rank_pairs;
  return shards;
}

int64_t stepsPerEpoch(const EpochShard& epoch0, int64_t batch_size) {
  RT_CHECK(batch_size >= 1, "batch size must be >= 1");
  int64_t least = epoch0.rank_pairs.empty() ? 0 : epoch0.rank_pairs[0];
  int worst = 0;
  for (size_t r = 0; r < epoch0.rank_pairs.size(); ++r) {
    if (epoch0.rank_pairs[r] < least) least = epoch0.rank_pairs[r], worst = static_cast<int>(r);
  }
  if (least == 0) {
    RT_THROW(DataError, "rank ", worst, " of ", epoch0.rank_pairs.size(),
             " gets no training pairs from its share of the training lines: too few lines for this many ranks, "
             "lines of one item only (a basket listing one item again is one item), or data.subsample dropping "
             "nearly every item of a small corpus "
             "(data.subsample 0 keeps them all)");
  }
  // A batch larger than a rank's pairs would repeat each of them within one step (and the step count would
  // be 1 whatever the data): refused, with the largest batch this data allows.
  if (least < batch_size) {
    RT_THROW(DataError, "rank ", worst, " of ", epoch0.rank_pairs.size(), " gets ", least,
             " training pairs per epoch, fewer than one batch (data.batch_size ", batch_size,
             "): use data.batch_size ", least, " or less, fewer ranks, or more data");
  }
  return least / batch_size;
}

void streamPairs(const PairGenerator& gen, const EpochShard& shard, int64_t first, int64_t count,
                 std::vector<Pair>& out, LineCursor& cursor) {
  const int64_t total = shard.pairs();
  RT_CHECK_T(DataError, total > 0, "this rank has no training pairs in epoch ", shard.epoch,
             ": data.subsample dropped every item of its lines in this epoch (a corpus this small needs "
             "data.subsample 0, or fewer ranks)");
  out.clear();
  out.reserve(static_cast<size_t>(count));
  int64_t p = first % total;
  auto j = static_cast<size_t>(std::upper_bound(shard.pair_end.begin(), shard.pair_end.end(), p) -
                               shard.pair_end.begin());
  while (static_cast<int64_t>(out.size()) < count) {
    const int64_t start = j == 0 ? 0 : shard.pair_end[j - 1];
    const int64_t from = p - start;
    // Where the cursor already is in this line, or before `from`, it goes on from there; else the line
    // starts again.
    if (!cursor.reads(gen, shard.lines[j], shard.epoch) || cursor.position() > from) {
      cursor.start(gen, shard.lines[j], shard.epoch);
    }
    cursor.skip(from - cursor.position());
    const int64_t take = std::min<int64_t>(shard.pair_end[j] - p, count - static_cast<int64_t>(out.size()));
    cursor.take(take, out);
    p += take;
    if (++j == shard.lines.size()) {
      j = 0;
      p = 0;
    }
  }
}

}  // namespace ringtrain::data
