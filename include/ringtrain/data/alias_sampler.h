// Walker/Vose alias method: after O(n) setup, each draw from a discrete distribution over n outcomes
// costs one random number and one table lookup, whatever n. Used for negatives (unigram^0.75) and for
// Zipf popularity in the synthetic generator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringtrain/data/random.h"

namespace ringtrain::data {

class AliasSampler {
 public:
  AliasSampler() = default;
  // weights[i] >= 0, at least one > 0; throws ringtrain::Error otherwise.
  explicit AliasSampler(const std::vector<double>& weights);

  int64_t size() const { return static_cast<int64_t>(prob_.size()); }
  // The normalised probability of outcome i (for tests and diagnostics).
  double probability(int64_t i) const { return p_[static_cast<size_t>(i)]; }

  int32_t sample(Xoshiro256& rng) const {
    // One 64-bit draw: the high part picks the column, the low 32 bits decide column vs alias.
    const uint64_t r = rng.next();
    const uint64_t column = static_cast<uint64_t>((static_cast<unsigned __int128>(r) * prob_.size()) >> 64);
    const uint32_t coin = static_cast<uint32_t>(r);
    return coin < prob_[column] ? static_cast<int32_t>(column) : alias_[column];
  }

 private:
  std::vector<uint64_t> prob_;  // threshold in 2^-32 units (up to 2^32): keep the column when coin < prob_
  std::vector<int32_t> alias_;
  std::vector<double> p_;
};

}  // namespace ringtrain::data
