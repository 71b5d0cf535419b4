#include "ringtrain/data/alias_sampler.h"

#include <cmath>
#include <cstdint>

#include "ringtrain/core/error.h"

namespace ringtrain::data {

// Vose's construction: scale weights so the mean is 1; pair each "small" column (< 1) with a "large" one
// that donates the rest of the column's unit height and becomes its alias.
AliasSampler::AliasSampler(const std::vector<double>& weights) {
  const size_t n = weights.size();
  RT_CHECK(n > 0, "alias sampler needs at least one outcome");
  RT_CHECK(n < (size_t{1} << 31), "alias sampler supports < 2^31 outcomes, got ", n);
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    RT_CHECK(weights[i] >= 0.0 && std::isfinite(weights[i]), "alias sampler weight ", i, " is ", weights[i]);
    total += weights[i];
  }
  RT_CHECK(total > 0.0, "alias sampler weights sum to zero");
  p_.resize(n);
  std::vector<double> scaled(n);
  std::vector<int32_t> small, large;
  small.reserve(n);
  large.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    p_[i] = weights[i] / total;
    scaled[i] = p_[i] * static_cast<double>(n);
    (scaled[i] < 1.0 ? small : large).push_back(static_cast<int32_t>(i));
  }
  prob_.assign(n, 0);
  alias_.resize(n);
  for (size_t i = 0; i < n; ++i) alias_[i] = static_cast<int32_t>(i);
  constexpr double kScale = 4294967296.0;  // 2^32
  while (!small.empty() && !large.empty()) {
    const int32_t s = small.back();
    small.pop_back();
    const int32_t l = large.back();
    prob_[s] = static_cast<uint64_t>(std::llround(scaled[s] * kScale));
    alias_[s] = l;
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // Leftovers are 1 up to rounding: always keep the column.
  for (int32_t i : large) prob_[i] = uint64_t{1} << 32;
  for (int32_t i : small) prob_[i] = uint64_t{1} << 32;
}

}  // namespace ringtrain::data
