// The train / held-out split that evaluation needs (../shared/BENCHMARKS.md section 4), and the held-out
// queries for both protocols.
//
// Split: the kept lines are permuted by Xoshiro256(mixSeed({split_seed, "split"})) (Fisher-Yates) and the
// first round(eval_fraction * lines) of the permutation are held out; the rest train. Deterministic from
// (corpus, eval_fraction, split_seed) alone, identical on every rank and machine.
//
// Protocols (chosen by data.context):
//   basket - a held-out basket is never trained on. Each held-out basket with >= 2 distinct items gives one
//            query: one distinct item chosen at random (seeded by split_seed and the line) is the target,
//            the other distinct items are the query.
//   window - sessions: the last h = min(data.eval_hide_last, distinct-safe length - 1) items of a held-out
//            session are hidden; each hidden item gives a query whose items are the visible prefix (the
//            items before the hidden tail, duplicates removed, order kept) and whose target is that item.
//            The visible prefix still trains (it is the user's past), so eval_fraction 1 with
//            eval_hide_last 10 is MovieLens' "leave the last 10 out per user".
//            A hidden item that also occurs in its visible prefix is skipped (ranking excludes query items).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringtrain/config/config.h"
#include "ringtrain/data/corpus.h"

namespace ringtrain::data {

enum class EvalProtocol { kBasket, kWindow };

struct EvalQuery {
  std::vector<int32_t> query;  // vocabulary ids, distinct
  int32_t target = -1;         // vocabulary id, not in query
  int64_t line = -1;           // corpus line it came from
};

struct SplitOptions {
  double eval_fraction = 0.2;
  int64_t split_seed = 42;
  EvalProtocol protocol = EvalProtocol::kWindow;
  int hide_last = 1;  // window protocol only

  static SplitOptions from(const config::DataOptions& data);
};

class CorpusSplit {
 public:
  CorpusSplit() = default;
  // Throws DataError when no line is left to train on.
  CorpusSplit(const Corpus& corpus, const SplitOptions& options);
  CorpusSplit(const Corpus& corpus, const config::DataOptions& data)
      : CorpusSplit(corpus, SplitOptions::from(data)) {}

  const SplitOptions& options() const { return options_; }
  // Lines that feed training, ascending: the train lines and, under the window protocol, the held-out
  // lines whose visible prefix still has >= 2 items.
  const std::vector<int64_t>& trainLines() const { return train_; }
  // Held-out lines, ascending.
  const std::vector<int64_t>& heldOutLines() const { return held_out_; }
  bool isHeldOut(int64_t line) const { return held_flag_[static_cast<size_t>(line)] != 0; }
  // How many trailing items of `line` are hidden (0 for train lines and under the basket protocol,
  // where held-out lines are not in trainLines()).
  int64_t hiddenCount(const Corpus& corpus, int64_t line) const;
  // The tokens of `line` that training may use.
  LineView trainTokens(const Corpus& corpus, int64_t line) const {
    LineView v = corpus.line(line);
    v.size -= hiddenCount(corpus, line);
    return v;
  }

 private:
  SplitOptions options_;
  std::vector<int64_t> train_;
  std::vector<int64_t> held_out_;
  std::vector<uint8_t> held_flag_;
};

// The held-out queries of `split` under its protocol, in line order (deterministic).
std::vector<EvalQuery> heldOutQueries(const Corpus& corpus, const CorpusSplit& split);

// How trainCounts counts a line: every listing (sessions), or each item once per basket, and a basket of
// fewer than two different items (one item listed again: it gives no pairs) not at all.
enum class LineCounting { kEveryListing, kBasketsAsSets };

// Unigram counts over the training tokens only: what negatives and subsampling use, and what tells an item
// training never saw (count 0: left out of exports, ranked behind the seen in evaluation).
std::vector<int64_t> trainCounts(const Corpus& corpus, const CorpusSplit& split,
                                 LineCounting counting = LineCounting::kEveryListing);

// Whether some training line lists one item twice: the lines where the two ways of counting, and basket
// mode before and after it took baskets as sets, part.
bool aTrainLineRepeatsAnItem(const Corpus& corpus, const CorpusSplit& split);

}  // namespace ringtrain::data
