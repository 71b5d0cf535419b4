#include "ringtrain/data/split.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <unordered_set>

#include "ringtrain/core/error.h"
#include "ringtrain/data/random.h"

namespace ringtrain::data {
namespace {
constexpr uint64_t kSplitTag = 0x73706c6974ULL;   // "split"
constexpr uint64_t kTargetTag = 0x746172676574ULL;  // "target"
}  // namespace

SplitOptions SplitOptions::from(const config::DataOptions& data) {
  SplitOptions o;
  o.eval_fraction = data.eval_fraction;
  o.split_seed = data.split_seed;
  o.protocol = data.context == "basket" ? EvalProtocol::kBasket : EvalProtocol::kWindow;
  o.hide_last = data.eval_hide_last;
  return o;
}

CorpusSplit::CorpusSplit(const Corpus& corpus, const SplitOptions& options) : options_(options) {
  RT_CHECK_T(DataError, options.eval_fraction >= 0.0 && options.eval_fraction <= 1.0,
             "data.eval_fraction must be in [0, 1], got ", options.eval_fraction);
  RT_CHECK_T(DataError, options.hide_last >= 1, "data.eval_hide_last must be >= 1");
  const int64_t n = corpus.numLines();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  Xoshiro256 rng(mixSeed({static_cast<uint64_t>(options.split_seed), kSplitTag}));
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(perm[i], perm[rng.below(static_cast<uint64_t>(i + 1))]);
  }
  const auto held = static_cast<int64_t>(std::llround(options.eval_fraction * static_cast<double>(n)));
  held_flag_.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < held; ++i) held_flag_[perm[i]] = 1;
  for (int64_t l = 0; l < n; ++l) {
    if (held_flag_[l]) {
      held_out_.push_back(l);
      if (options.protocol == EvalProtocol::kWindow && corpus.line(l).size - hiddenCount(corpus, l) >= 2) {
        train_.push_back(l);
      }
    } else {
      train_.push_back(l);
    }
  }
  if (train_.empty()) {
    RT_THROW(DataError, corpus.path(), ": no lines left to train on after holding out ", held, " of ", n,
             " (data.eval_fraction = ", options.eval_fraction, ")");
  }
}

int64_t CorpusSplit::hiddenCount(const Corpus& corpus, int64_t line) const {
  if (options_.protocol != EvalProtocol::kWindow || !isHeldOut(line)) return 0;
  return std::min<int64_t>(options_.hide_last, corpus.line(line).size - 1);
}

std::vector<EvalQuery> heldOutQueries(const Corpus& corpus, const CorpusSplit& split) {
  std::vector<EvalQuery> out;
  const SplitOptions& o = split.options();
  std::vector<int32_t> distinct;
  std::unordered_set<int32_t> seen;
  for (int64_t l : split.heldOutLines()) {
    const LineView v = corpus.line(l);
    if (o.protocol == EvalProtocol::kBasket) {
      distinct.clear();
      seen.clear();
      for (int32_t id : v) {
        if (seen.insert(id).second) distinct.push_back(id);
      }
      if (distinct.size() < 2) continue;
      Xoshiro256 rng(mixSeed({static_cast<uint64_t>(o.split_seed), kTargetTag, static_cast<uint64_t>(l)}));
      const size_t t = rng.below(distinct.size());
      EvalQuery q;
      q.line = l;
      q.target = distinct[t];
      q.query.reserve(distinct.size() - 1);
      for (size_t i = 0; i < distinct.size(); ++i) {
        if (i != t) q.query.push_back(distinct[i]);
      }
      out.push_back(std::move(q));
    } else {
      const int64_t hidden = split.hiddenCount(corpus, l);
      const int64_t visible = v.size - hidden;
      distinct.clear();
      seen.clear();
      for (int64_t i = 0; i < visible; ++i) {
        if (seen.insert(v[i]).second) distinct.push_back(v[i]);
      }
      for (int64_t i = visible; i < v.size; ++i) {
        // Already in the query (ranking excludes query items), or already a target of this line: one query
        // per distinct hidden item, as a basket's are, so a repeated one does not count twice.
        if (!seen.insert(v[i]).second) continue;
        EvalQuery q;
        q.line = l;
        q.target = v[i];
        q.query = distinct;
        out.push_back(std::move(q));
      }
    }
  }
  return out;
}

std::vector<int64_t> trainCounts(const Corpus& corpus, const CorpusSplit& split, LineCounting counting) {
  std::vector<int64_t> counts(static_cast<size_t>(corpus.vocab().size()), 0);
  std::vector<int32_t> distinct;
  for (int64_t l : split.trainLines()) {
    const LineView v = split.trainTokens(corpus, l);
    if (counting == LineCounting::kEveryListing) {
      for (int32_t id : v) ++counts[id];
      continue;
    }
    distinct.assign(v.begin(), v.end());
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    if (distinct.size() < 2) continue;  // one item, listed again: no pairs
    for (int32_t id : distinct) ++counts[id];
  }
  return counts;
}

bool aTrainLineRepeatsAnItem(const Corpus& corpus, const CorpusSplit& split) {
  std::vector<int32_t> sorted;
  for (int64_t l : split.trainLines()) {
    const LineView v = split.trainTokens(corpus, l);
    sorted.assign(v.begin(), v.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return true;
  }
  return false;
}

}  // namespace ringtrain::data
