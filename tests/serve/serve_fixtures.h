// Small random exports for the server tests: a word2vec text file (and items.tsv) written to a temp dir.
#pragma once

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace ringtrain::serve::testing {

// Writes "n dim" then "item<i> v1 .. vdim" lines; returns the raw (unnormalized) vectors.
inline std::vector<float> writeExport(const std::string& path, int64_t n, int64_t dim, uint64_t seed,
                                      const std::string& prefix = "item") {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n * dim));
  std::ofstream out(path);
  out << n << " " << dim << "\n";
  for (int64_t i = 0; i < n; ++i) {
    out << prefix << i;
    for (int64_t d = 0; d < dim; ++d) {
      v[i * dim + d] = normal(rng);
      out << " " << v[i * dim + d];
    }
    out << "\n";
  }
  return v;
}

inline void writeItems(const std::string& path, int64_t n, const std::string& prefix = "item") {
  std::ofstream out(path);
  out << "id\tkey\tname\tcategory\n";
  for (int64_t i = 0; i < n; ++i) out << i << "\t" << prefix << i << "\tName " << i << "\tcat" << i % 7 << "\n";
}

inline void writeText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

}  // namespace ringtrain::serve::testing
