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
//
// Where the CPU has AVX512-VNNI the pass over the catalog runs in 8-bit integers instead (VPDPBUSD: four
// products per 32-bit lane and instruction against an FMA's one, a quarter of fp32's bytes), keeping every row
// that a proven error bound cannot rule out of the top-k; those few rows are then rescored in fp32. The
// answer is the fp32 kernels', bit for bit (src/serve/scorer_paths.h).
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
  // The same from rows it adopts: they stay as the row-major copy (rowFp32), with or without the 8-bit panels, so
  // that their owner (a served model) does not keep a second copy of its largest buffer.
  PackedCatalog(std::vector<float> rows, int64_t dim);
  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }
  int64_t panels() const { return (rows_ + kPanelRows - 1) / kPanelRows; }
  const float* panel(int64_t p) const { return data_.data() + p * dim_ * kPanelRows; }
  // The same panels in 8-bit integers, built only where the CPU has AVX512-VNNI and the error bound covers
  // the rows (every value finite, row norms below 1e18, not all zero, dim <= 1024; see scorer_paths.h), with
  // a row-major fp32 copy for the rescoring; empty otherwise. Every value v is stored as round(v / scale),
  // one scale for the catalog (its largest |v| / 127); panel p holds, for each group of four dimensions,
  // 32 rows x 4 bytes. int8Bias(p) gives, per row of panel p, 128 x the sum of its stored values (the
  // kernel's unsigned query bytes carry an offset of 128).
  bool hasInt8() const { return !int8_.empty(); }
  int64_t quads() const { return (dim_ + 3) / 4; }
  const int8_t* panelInt8(int64_t p) const { return int8_.data() + p * quads() * 4 * kPanelRows; }
  const int32_t* int8Bias(int64_t p) const { return int8_bias_.data() + p * kPanelRows; }
  double int8Scale() const { return int8_scale_; }
  // The largest |v - scale x stored(v)| over the catalog, and the largest L1 norm of a row: with the query's
  // own rounding they bound the integer pass's error (int8ScoreBound).
  double int8MaxError() const { return int8_max_error_; }
  double maxRowL1() const { return max_row_l1_; }
  // The rows as given (row-major): kept beside the 8-bit panels for rescoring candidates, and always when
  // the catalog adopted them; hasRows() says whether they are here.
  bool hasRows() const { return !rows_fp32_.empty() || rows_ == 0; }
  const float* rowFp32(int64_t r) const { return rows_fp32_.data() + r * dim_; }
  // The largest L2 norm of a row (bounds the fp32 kernels' own rounding).
  double maxRowNorm() const { return max_row_norm_; }

 private:
  void pack(const float* rows);  // the fp32 panels, and the 8-bit ones where they apply
  void packInt8(const float* rows);
  std::vector<float> data_;
  std::vector<int8_t> int8_;
  std::vector<int32_t> int8_bias_;
  std::vector<float> rows_fp32_;  // with int8_, or adopted
  int64_t rows_ = 0;
  int64_t dim_ = 0;
  double max_row_norm_ = 0.0;
  double max_row_l1_ = 0.0;
  double int8_scale_ = 0.0;
  double int8_max_error_ = 0.0;
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

// True when a SIMD kernel (AVX-512, or AVX2+FMA) is in use; simdKernelName() says which ("avx512-vnni",
// "avx512", "avx2", "generic"). RINGTRAIN_SCORER_SIMD=avx512, =avx2 or =none, read once at start, caps the
// choice; =vnni, like unset, takes the best the CPU has (the 8-bit pass included).
bool usingSimdKernel();
const char* simdKernelName();
// Throws ConfigError when RINGTRAIN_SCORER_SIMD holds anything but vnni, avx512, avx2 or none (or nothing).
void checkScorerSimdSetting();

}  // namespace ringtrain::serve
