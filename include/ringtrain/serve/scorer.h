// Exact top-k by inner product over a catalog of unit vectors (cosine similarity).
//
// Algorithm: the catalog is packed once, at load, into panels of kPanelRows (32) rows stored
// dimension-major (panel p holds rows 32p..32p+31 as dim x 32 floats). A batch of B queries is scored panel
// by panel: for each panel, groups of queries are multiplied with it by a register-blocked kernel (12
// queries x 32 rows of accumulators with AVX-512, 3 x 32 with AVX2+FMA, chosen by the CPU at start), so
// the panel is read from memory once per batch and stays in L1 while every query uses it; that is the one
// matrix product queries[B x D] x catalog^T[D x N] done without materializing the B x N score matrix. Each
// group's 32 scores per query go straight into that query's bounded min-heap of size k (a score enters only
// when it beats the heap's smallest), which gives the exact top-k. Batching pays because a batch of 64
// queries streams the catalog once instead of 64 times.
#pragma once

#include <cstdint>
#include <vector>

namespace ringtrain::serve {

struct Hit {
  int64_t row = 0;
  float score = 0.0f;
};

inline constexpr int kPanelRows = 32;

// The catalog in the scorer's panel layout (rows padded with zeros to a multiple of kPanelRows).
class PackedCatalog {
 public:
  PackedCatalog() = default;
  PackedCatalog(const float* rows, int64_t n, int64_t dim);
  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }
  int64_t panels() const { return (rows_ + kPanelRows - 1) / kPanelRows; }
  const float* panel(int64_t p) const { return data_.data() + p * dim_ * kPanelRows; }

 private:
  std::vector<float> data_;
  int64_t rows_ = 0;
  int64_t dim_ = 0;
};

// One query of a batch: its vector (dim floats), how many results, and rows never to return (the query's
// own items). `exclude` must stay valid during the call.
struct Query {
  const float* vector = nullptr;
  int k = 10;
  const std::vector<int64_t>* exclude = nullptr;
};

// Exact top-k for every query, best first (ties: lower row first). Thread-safe: reads only.
std::vector<std::vector<Hit>> topK(const PackedCatalog& catalog, const std::vector<Query>& queries);

// Reference: one dot product at a time over a row-major matrix. For tests and benchmarks.
std::vector<Hit> bruteForceTopK(const float* rows, int64_t n, int64_t dim, const float* query, int k,
                                const std::vector<int64_t>& exclude);

// True when a SIMD kernel (AVX-512, or AVX2+FMA) is in use; simdKernelName() says which ("avx512", "avx2",
// "generic"). RINGTRAIN_SCORER_SIMD=avx2 or =none, read once at start, caps the choice.
bool usingSimdKernel();
const char* simdKernelName();

}  // namespace ringtrain::serve
