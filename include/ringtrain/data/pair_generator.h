// Skip-gram with negative sampling: positive (center, context) pairs from a line, negatives from the
// unigram^ns_exponent distribution (0.75 by default), and the per-rank, per-epoch sharding that decides which pairs form batch i.
//
// Pairs of one line in one epoch are a pure function of (seed, epoch, line): a Xoshiro256 stream seeded
// by mixSeed({seed, epoch, line}) draws, in this order,
//   1. subsampling: item t is kept with probability min(1, (sqrt(f/s) + 1) * s / f), f = its share of the
//      training tokens, s = data.subsample (word2vec's formula; s = 0 keeps everything); in basket mode a
//      basket is a set: an item listed again is dropped before this step (one draw, at its first place), so
//      no item is paired with itself (window mode keeps repeats: a session may come back to an item); the
//      frequencies f and the negatives' weights count baskets likewise (lineCountingOf);
//   2. window: for each kept center, a reduced half-width b uniform in [1, window] (word2vec), and the
//      contexts are the kept items at distance <= b, nearest first, left then right (data.direction
//      forward: only the right side, the items after the center; b is drawn the same way either way);
//      basket: the contexts are min(m - 1, 2 * window) of the other m - 1 kept items, drawn without
//      replacement (so a 100-item basket gives 100 * 10 pairs, not 100 * 99, with window 5).
// The pair count of a line needs only steps 1 and the b draws, so countPairs() is cheap and exact.
//
// Sharding (EpochShard): the training lines are permuted by mixSeed({seed, epoch, "shard"}); rank r takes
// the lines at permutation positions r, r + W, r + 2W, ... (a disjoint cover, reshuffled every epoch,
// with no set_epoch: the epoch is part of every seed). The rank's pairs, line after line, form its pair
// stream; batch i is stream pairs [i*B, (i+1)*B). Every rank runs the same steps per epoch:
//   steps = max(1, floor(min over ranks of epoch-0 pairs / B)),
// computed by every rank from the corpus and seed alone (no communication). In later epochs a rank's pair
// count differs a little; the tail beyond steps*B is dropped, and a shortfall wraps to the start of its
// stream (those pairs get fresh negatives).
// Negatives of batch i are drawn from mixSeed({seed, epoch, rank, i, "neg"}); a negative may equal the
// positive context (word2vec does not reject either).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "ringtrain/config/config.h"
#include "ringtrain/data/alias_sampler.h"
#include "ringtrain/data/corpus.h"
#include "ringtrain/data/random.h"
#include "ringtrain/data/split.h"

namespace ringtrain::data {

enum class ContextMode { kWindow, kBasket };
// Which neighbours of a window center are its contexts; kForward only pairs a center with later items.
enum class Direction { kBoth, kForward };

// How the training counts read a line in this mode: baskets as sets, sessions listing by listing.
LineCounting lineCountingOf(ContextMode mode);

struct PairOptions {
  ContextMode mode = ContextMode::kWindow;
  int window = 5;
  Direction direction = Direction::kBoth;  // window mode only
  double subsample = 1e-3;
  int negatives = 5;
  double ns_exponent = 0.75;  // negative distribution: train count^ns_exponent, unseen items never drawn
  int64_t seed = 42;

  static PairOptions from(const config::JobConfig& job);
};

struct Pair {
  int32_t center;
  int32_t context;
};

class PairGenerator {
 public:
  // Counts for subsampling and negatives come from the split's training tokens.
  PairGenerator(std::shared_ptr<const Corpus> corpus, std::shared_ptr<const CorpusSplit> split,
                const PairOptions& options);

  const PairOptions& options() const { return options_; }
  // Different for every generator a process makes (copies share it: they generate the same pairs).
  uint64_t id() const { return id_; }
  const Corpus& corpus() const { return *corpus_; }
  const CorpusSplit& split() const { return *split_; }
  double keepProbability(int32_t id) const { return keep_.empty() ? 1.0 : keep_[id]; }
  const AliasSampler& negativeSampler() const { return negatives_; }

  // Exact number of pairs linePairs() appends for this (line, epoch).
  int64_t countPairs(int64_t line, int64_t epoch) const;
  // Appends the line's pairs for this epoch to `out`; `scratch` avoids allocation across calls.
  void linePairs(int64_t line, int64_t epoch, std::vector<Pair>& out, std::vector<int32_t>& scratch) const;

 private:
  friend class LineCursor;
  // Draws step 1 (subsampling) into `kept`, returns the stream positioned for step 2.
  Xoshiro256 keptItems(int64_t line, int64_t epoch, std::vector<int32_t>& kept) const;

  std::shared_ptr<const Corpus> corpus_;
  std::shared_ptr<const CorpusSplit> split_;
  PairOptions options_;
  uint64_t id_;
  std::vector<float> keep_;  // empty: no subsampling
  AliasSampler negatives_;
};

// One rank's share of one epoch.
struct EpochShard {
  int64_t epoch = 0;
  std::vector<int64_t> lines;     // this rank's lines, in epoch order (lines with no pairs included)
  std::vector<int64_t> pair_end;  // pair_end[j] = pairs in lines[0..j] (inclusive prefix sums)
  int64_t pairs() const { return pair_end.empty() ? 0 : pair_end.back(); }
  std::vector<int64_t> rank_pairs;  // pairs of every rank this epoch (for diagnostics and steps)
};

// Builds rank `rank`'s shard of `epoch` (O(training tokens): it counts every rank's pairs).
EpochShard makeEpochShard(const PairGenerator& gen, int64_t epoch, int rank, int world_size);
// The shards of ranks first_rank..last_rank in the same one pass (what a loader that holds its neighbours'
// rows needs).
std::vector<EpochShard> makeEpochShards(const PairGenerator& gen, int64_t epoch, int first_rank, int last_rank,
                                        int world_size);
// steps = min over ranks of epoch-0 pairs / batch_size; throws DataError when a rank has none, or fewer
// than one batch.
int64_t stepsPerEpoch(const EpochShard& epoch0, int64_t batch_size);

// A place in the pair stream of one (line, epoch) of a generator, kept by the caller between calls: the
// batches a long line spans go on from where the last one ended instead of generating the line's pairs
// again (a line of 400,000 items is about 4M pairs, which every batch of 256 regenerated: the loader slowed
// in proportion to the line's length), and it holds the line's kept items and one center's pairs, not all
// of the line's pairs (a line of 5.5M items held 440 MB of them in every loader thread). Going forward
// costs one draw per center passed over (window) or its permutation steps (basket); going back starts the
// line again.
class LineCursor {
 public:
  // Whether it is in (line, epoch) of `gen` (another generator, another corpus or settings, is another line).
  bool reads(const PairGenerator& gen, int64_t line, int64_t epoch) const;
  // Places it at the first pair of (line, epoch).
  void start(const PairGenerator& gen, int64_t line, int64_t epoch);
  int64_t position() const { return position_; }  // pairs of the line before the next one it gives
  void skip(int64_t n);                             // passes over the next n pairs
  void take(int64_t n, std::vector<Pair>& out);     // appends the next n pairs
  // Both throw when the line has fewer pairs left.

 private:
  // Draws the next center: false when its pairs, at most `skip_up_to` of them (`skipped`), were passed over
  // without being written; true when they are in center_.
  bool nextCenter(int64_t skip_up_to, int64_t& skipped);

  uint64_t generator_ = 0;  // PairGenerator::id(); 0: none
  int64_t line_ = -1;
  int64_t epoch_ = -1;
  bool basket_ = false;
  bool both_ = true;
  int window_ = 1;
  Xoshiro256 rng_{0};
  std::vector<int32_t> kept_;  // the line's items after subsampling
  std::vector<int32_t> pos_;   // basket: the permutation carried from center to center
  int64_t next_center_ = 0;
  std::vector<Pair> center_;  // the current center's pairs
  size_t center_at_ = 0;      // the next of them to give
  int64_t position_ = 0;
};

// Fills pairs [first, first + count) of the shard's stream (wrapping past its end) into `out`.
void streamPairs(const PairGenerator& gen, const EpochShard& shard, int64_t first, int64_t count,
                 std::vector<Pair>& out, LineCursor& cursor);

}  // namespace ringtrain::data
