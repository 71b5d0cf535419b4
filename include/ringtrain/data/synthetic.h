// The synthetic corpus (`ringtrain gen-data`, and the default data of a job without data.corpus):
// N items in K planted categories (item k belongs to category k mod K and has popularity rank k / K
// within it), Zipf(s) popularity inside a category, sessions that each pick a home category uniformly
// and draw every item from it with probability alpha, otherwise from a uniformly chosen category
// (noise). Session lengths are uniform in [max(2, L/2), L + L/2] (mean ~L); an item equal to its
// predecessor is redrawn once. Deterministic from (options, seed).
// Files: sequences.txt (tokens are item numbers) and items.tsv (`id key name category`, category =
// "c<planted>"), each written to a temporary file and renamed, so readers never see half a file.
#pragma once

#include <cstdint>
#include <string>

#include "ringtrain/config/config.h"

namespace ringtrain::data {

struct SyntheticResult {
  std::string sequences_path;
  std::string items_path;
  int64_t sessions = 0;
  int64_t tokens = 0;
};

// Writes the corpus into `dir` (created if needed), then a synthetic.stamp of the options and seed; throws
// DataError if it cannot write, ConfigError (before writing) where `dir` holds a sequences.txt or items.tsv
// of somebody else's (see README, Data).
SyntheticResult generateSynthetic(const config::SyntheticOptions& options, int64_t seed,
                                  const std::string& dir, bool write_items = true);

// The planted category of item number k (what items.tsv records), for tests and evaluation.
inline int32_t plantedCategory(int64_t item, int categories) { return static_cast<int32_t>(item % categories); }

}  // namespace ringtrain::data
