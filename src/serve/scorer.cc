// Exact top-k scorer; the algorithm is described in include/ringtrain/serve/scorer.h.
#include "ringtrain/serve/scorer.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "ringtrain/core/error.h"
#include "serve/scorer_paths.h"

namespace ringtrain::serve {
namespace {

// Queries per kernel call. A panel row is 32 floats: 4 AVX2 registers or 2 AVX-512 ones. AVX2: 3 queries
// x 4 accumulators + 4 panel registers fill the 16. AVX-512: 12 x 2 accumulators + 2 panel registers + a
// broadcast, 27 of 32. Per step over d a kernel loads the panel row and one value per query; the wide
// panel makes each of those loads feed several FMAs, so the loads do not limit the FMAs.
constexpr int kGroupAvx2 = 3;
constexpr int kGroupAvx512 = 12;
constexpr int kMaxGroup = kGroupAvx512;
// Rows within the integer prefilter's window, beyond which rescoring them one by one would cost about as
// much as the fp32 scan of the whole catalog: the query is then answered by the fp32 scan.
constexpr size_t kMaxWindowRows = 1024;

// Scores up to kGroupAvx2 queries (rows of q, stride dim) against one panel; out is [m x kPanelRows].
// Both SIMD kernels sum over d in the same order with one fused multiply-add per step, so they give the
// same scores bit for bit.
template <int M>
__attribute__((target("avx2,fma"))) void kernelAvx2(const float* q, int64_t dim, const float* panel,
                                                    float* out) {
  constexpr int kRegs = kPanelRows / 8;
  __m256 acc[M][kRegs];
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < kRegs; ++r) acc[i][r] = _mm256_setzero_ps();
  }
  for (int64_t d = 0; d < dim; ++d) {
    __m256 c[kRegs];
    for (int r = 0; r < kRegs; ++r) c[r] = _mm256_loadu_ps(panel + d * kPanelRows + 8 * r);
    for (int i = 0; i < M; ++i) {
      const __m256 b = _mm256_broadcast_ss(q + i * dim + d);
      for (int r = 0; r < kRegs; ++r) acc[i][r] = _mm256_fmadd_ps(b, c[r], acc[i][r]);
    }
  }
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < kRegs; ++r) _mm256_storeu_ps(out + i * kPanelRows + 8 * r, acc[i][r]);
  }
}

// The same for up to kGroupAvx512 queries.
template <int M>
__attribute__((target("avx512f"))) void kernelAvx512(const float* q, int64_t dim, const float* panel, float* out) {
  constexpr int kRegs = kPanelRows / 16;
  __m512 acc[M][kRegs];
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < kRegs; ++r) acc[i][r] = _mm512_setzero_ps();
  }
  for (int64_t d = 0; d < dim; ++d) {
    __m512 c[kRegs];
    for (int r = 0; r < kRegs; ++r) c[r] = _mm512_loadu_ps(panel + d * kPanelRows + 16 * r);
    for (int i = 0; i < M; ++i) {
      const __m512 b = _mm512_set1_ps(q[i * dim + d]);
      for (int r = 0; r < kRegs; ++r) acc[i][r] = _mm512_fmadd_ps(b, c[r], acc[i][r]);
    }
  }
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < kRegs; ++r) _mm512_storeu_ps(out + i * kPanelRows + 16 * r, acc[i][r]);
  }
}

void kernelGeneric(int m, const float* q, int64_t dim, const float* panel, float* out) {
  for (int i = 0; i < m; ++i) {
    float acc[kPanelRows] = {};
    for (int64_t d = 0; d < dim; ++d) {
      const float b = q[i * dim + d];
      for (int j = 0; j < kPanelRows; ++j) acc[j] += b * panel[d * kPanelRows + j];
    }
    std::memcpy(out + i * kPanelRows, acc, sizeof acc);
  }
}

enum class Simd { kNone, kAvx2, kAvx512, kAvx512Vnni };

// The values RINGTRAIN_SCORER_SIMD takes.
bool isSimdCap(const std::string& v) { return v == "vnni" || v == "avx512" || v == "avx2" || v == "none"; }

Simd detectSimd() {
  __builtin_cpu_init();
  // RINGTRAIN_SCORER_SIMD=vnni|avx512|avx2|none caps the kernel, for comparing them: every cap gives the
  // same top-k; the SIMD ones give the same scores bit for bit (the generic loop rounds differently). vnni
  // (or unset) is the best the CPU has. Another value is refused by checkScorerSimdSetting() at start-up;
  // here, at static initialisation, it cannot be, and counts as unset.
  const char* cap = std::getenv("RINGTRAIN_SCORER_SIMD");
  std::string limit = cap == nullptr ? "" : cap;
  if (!isSimdCap(limit) || limit == "vnni") limit.clear();
  if (limit == "none") return Simd::kNone;
  if (limit.empty() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni")) {
    return Simd::kAvx512Vnni;
  }
  if (limit != "avx2" && __builtin_cpu_supports("avx512f")) return Simd::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::kAvx2;
  return Simd::kNone;
}
const Simd kSimd = detectSimd();

}  // namespace

void checkScorerSimdSetting() {
  const char* cap = std::getenv("RINGTRAIN_SCORER_SIMD");
  if (cap == nullptr || *cap == '\0') return;
  const std::string limit = cap;
  RT_CHECK_T(ConfigError, isSimdCap(limit),
             "RINGTRAIN_SCORER_SIMD=", limit, ": use vnni (the default: the best the CPU has), avx512, avx2 or none");
}

namespace {

const bool kWide = kSimd == Simd::kAvx512 || kSimd == Simd::kAvx512Vnni;
const int kGroup = kWide ? kGroupAvx512 : kGroupAvx2;

template <int... Ms>
void kernelAvx512Dispatch(int m, const float* q, int64_t dim, const float* panel, float* out,
                          std::integer_sequence<int, Ms...>) {
  // Calls kernelAvx512<m> for m in 1..kGroupAvx512.
  ((m == Ms + 1 ? (kernelAvx512<Ms + 1>(q, dim, panel, out), true) : false) || ...);
}

void kernel(int m, const float* q, int64_t dim, const float* panel, float* out) {
  switch (kSimd) {
    case Simd::kNone: return kernelGeneric(m, q, dim, panel, out);
    case Simd::kAvx512:
    case Simd::kAvx512Vnni:
      return kernelAvx512Dispatch(m, q, dim, panel, out, std::make_integer_sequence<int, kGroupAvx512>{});
    case Simd::kAvx2: break;
  }
  switch (m) {
    case 1: return kernelAvx2<1>(q, dim, panel, out);
    case 2: return kernelAvx2<2>(q, dim, panel, out);
    default: return kernelAvx2<3>(q, dim, panel, out);
  }
}

// Integer scores of up to kGroupAvx512 queries against one 8-bit panel, with VPDPBUSD: per step a group of
// four dimensions, 4 products per lane (the query's unsigned bytes, stored + 128, times the panel's signed
// ones), 32 rows in two registers. Subtracting the panel's bias (128 x each row's sum) leaves
// I = sum_d stored(q_d) stored(v_d), exact in int32. q holds each query's words (stride `quads`); out is
// [m x kPanelRows]. Sets rows[i] to the mask of rows whose score is at least floors[i], and returns a mask
// with bit i set when rows[i] is not empty: compared in registers, since most panels hold nothing for most
// queries once their top-k has filled, and the few rows that pass are then visited by their bits. With few
// queries the groups of dimensions are split over up to four sets of accumulators, so that more than two
// chains of dependent VPDPBUSD are in flight; integer sums do not depend on that order.
template <int M>
__attribute__((target("avx512f,avx512vnni"), always_inline)) inline void int8Step(__v16si (&acc)[M][2], const uint32_t* q,
                                                                                  int64_t stride, const int8_t* quad) {
  const __m512i c0 = _mm512_loadu_si512(quad);
  const __m512i c1 = _mm512_loadu_si512(quad + 64);
  for (int i = 0; i < M; ++i) {
    const __m512i b = _mm512_set1_epi32(static_cast<int>(q[i * stride]));
    acc[i][0] = (__v16si)_mm512_dpbusd_epi32((__m512i)acc[i][0], b, c0);
    acc[i][1] = (__v16si)_mm512_dpbusd_epi32((__m512i)acc[i][1], b, c1);
  }
}

template <int M>
__attribute__((target("avx512f,avx512vnni"))) uint32_t kernelInt8(const uint32_t* q, int64_t quads, const int8_t* panel,
                                                                  const int32_t* bias, const int32_t* floors,
                                                                  int32_t* out, uint32_t* rows) {
  constexpr int kSplit = M == 1 ? 4 : (M <= 4 ? 2 : 1);
  // __v16si, not __m512i: GCC 12 keeps an array of __m512i accumulators in memory across the loop.
  __v16si acc[kSplit][M][2];
  for (int s = 0; s < kSplit; ++s) {
    for (int i = 0; i < M; ++i) acc[s][i][0] = acc[s][i][1] = (__v16si)_mm512_setzero_si512();
  }
  int64_t t = 0;
  for (; t + kSplit <= quads; t += kSplit) {
    for (int s = 0; s < kSplit; ++s) int8Step<M>(acc[s], q + t + s, quads, panel + (t + s) * 4 * kPanelRows);
  }
  for (; t < quads; ++t) int8Step<M>(acc[0], q + t, quads, panel + t * 4 * kPanelRows);
  const __m512i bias0 = _mm512_loadu_si512(bias), bias1 = _mm512_loadu_si512(bias + 16);
  uint32_t hits = 0;
  for (int i = 0; i < M; ++i) {
    __m512i s0 = (__m512i)acc[0][i][0], s1 = (__m512i)acc[0][i][1];
    for (int s = 1; s < kSplit; ++s) {
      s0 = _mm512_add_epi32(s0, (__m512i)acc[s][i][0]);
      s1 = _mm512_add_epi32(s1, (__m512i)acc[s][i][1]);
    }
    s0 = _mm512_sub_epi32(s0, bias0);
    s1 = _mm512_sub_epi32(s1, bias1);
    _mm512_storeu_si512(out + i * kPanelRows, s0);
    _mm512_storeu_si512(out + i * kPanelRows + 16, s1);
    const __m512i floor = _mm512_set1_epi32(floors[i]);
    rows[i] = _mm512_cmpge_epi32_mask(s0, floor) | (static_cast<uint32_t>(_mm512_cmpge_epi32_mask(s1, floor)) << 16);
    hits |= static_cast<uint32_t>(rows[i] != 0) << i;
  }
  return hits;
}

template <int... Ms>
uint32_t kernelInt8Dispatch(int m, const uint32_t* q, int64_t quads, const int8_t* panel, const int32_t* bias,
                            const int32_t* floors, int32_t* out, uint32_t* rows, std::integer_sequence<int, Ms...>) {
  uint32_t hits = 0;
  ((m == Ms + 1 ? (hits = kernelInt8<Ms + 1>(q, quads, panel, bias, floors, out, rows), true) : false) || ...);
  return hits;
}

// Queries per kernel call for a batch of b: groups of even size (20 queries: 10 + 10, not 12 + 8), since a
// small remainder group would read the panel again for little work.
int evenGroupSize(int b, int max_group) {
  const int groups = (b + max_group - 1) / max_group;
  return (b + groups - 1) / groups;
}

// The 8-bit value standing for x at this scale (the catalog's or a query's): round(x / scale), in [-127, 127].
int quantize(double x, double scale) { return static_cast<int>(std::clamp(std::nearbyint(x / scale), -127.0, 127.0)); }

// Where dimension d of row j sits in its 8-bit panel: groups of four dimensions, 32 rows x 4 bytes each.
int64_t int8Offset(int64_t d, int64_t j) { return (d / 4) * 4 * kPanelRows + 4 * j + d % 4; }

// One row's score exactly as the fp32 SIMD kernels compute it: one fused multiply-add per dimension, in
// order, from zero (so the integer path ends with the same bits as the fp32 one). From the row-major
// copy: a row there is dim/16 cache lines, in a panel it is one line per dimension.
__attribute__((target("fma"))) float exactScore(const PackedCatalog& catalog, int64_t row, const float* q) {
  const float* v = catalog.rowFp32(row);
  float acc = 0.0f;
  for (int64_t d = 0; d < catalog.dim(); ++d) acc = __builtin_fmaf(q[d], v[d], acc);
  return acc;
}

// exactScore for n rows, eight chains at a time: each row's chain stays in order (the same bits), but
// eight independent chains keep the FMA units busy instead of waiting on one chain's latency. The rows are
// prefetched first, since candidates are scattered over the catalog.
__attribute__((target("fma"))) void exactScores(const PackedCatalog& catalog, const int64_t* rows, size_t n,
                                                const float* q, float* out) {
  const int64_t dim = catalog.dim();
  for (size_t i = 0; i < n; ++i) {
    const char* v = reinterpret_cast<const char*>(catalog.rowFp32(rows[i]));
    for (int64_t byte = 0; byte < dim * 4; byte += 64) __builtin_prefetch(v + byte);
  }
  constexpr size_t kChains = 8;
  size_t i = 0;
  for (; i + kChains <= n; i += kChains) {
    const float* v[kChains];
    float acc[kChains];
    for (size_t j = 0; j < kChains; ++j) {
      v[j] = catalog.rowFp32(rows[i + j]);
      acc[j] = 0.0f;
    }
    for (int64_t d = 0; d < dim; ++d) {
      const float x = q[d];
      for (size_t j = 0; j < kChains; ++j) acc[j] = __builtin_fmaf(x, v[j][d], acc[j]);
    }
    for (size_t j = 0; j < kChains; ++j) out[i + j] = acc[j];
  }
  for (; i < n; ++i) out[i] = exactScore(catalog, rows[i], q);
}

// True when some of the kPanelRows scores is above `threshold`: most panels, once a query's top-k has
// filled, hold nothing that can enter it, and this skips them with a few compares instead of 32 heap tests.
__attribute__((target("avx2"))) bool anyAboveAvx2(const float* scores, float threshold) {
  const __m256 t = _mm256_set1_ps(threshold);
  __m256 any = _mm256_cmp_ps(_mm256_loadu_ps(scores), t, _CMP_GT_OQ);
  for (int r = 1; r < kPanelRows / 8; ++r) any = _mm256_or_ps(any, _mm256_cmp_ps(_mm256_loadu_ps(scores + 8 * r), t, _CMP_GT_OQ));
  return _mm256_movemask_ps(any) != 0;
}

__attribute__((target("avx512f"))) bool anyAboveAvx512(const float* scores, float threshold) {
  const __m512 t = _mm512_set1_ps(threshold);
  __mmask16 any = 0;
  for (int r = 0; r < kPanelRows / 16; ++r) any |= _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + 16 * r), t, _CMP_GT_OQ);
  return any != 0;
}

bool anyAbove(const float* scores, float threshold) {
  static_assert(kPanelRows % 16 == 0, "the SIMD compares read whole registers");
  if (kWide) return anyAboveAvx512(scores, threshold);
  if (kSimd == Simd::kAvx2) return anyAboveAvx2(scores, threshold);
  for (int j = 0; j < kPanelRows; ++j) {
    if (scores[j] > threshold) return true;
  }
  return false;
}

// "a ranks before b": higher score, then lower row.
inline bool better(const Hit& a, const Hit& b) {
  return a.score > b.score || (a.score == b.score && a.row < b.row);
}

// A bounded min-heap (worst hit at the front) holding the best k hits seen so far.
class TopK {
 public:
  TopK(int k, const std::vector<int64_t>* exclude) : k_(k), exclude_(exclude) { heap_.reserve(k); }
  void offer(int64_t row, float score) {
    const Hit h{row, score};
    if (static_cast<int>(heap_.size()) == k_ && !better(h, heap_.front())) return;
    if (exclude_ != nullptr && std::find(exclude_->begin(), exclude_->end(), row) != exclude_->end()) return;
    if (static_cast<int>(heap_.size()) == k_) {
      std::pop_heap(heap_.begin(), heap_.end(), better);
      heap_.back() = h;
    } else {
      heap_.push_back(h);
    }
    std::push_heap(heap_.begin(), heap_.end(), better);
  }
  // Rows are offered in increasing order, so a later row needs a score above the worst kept one (a tie
  // loses to the lower row already kept): nothing at or below this can enter.
  float entryThreshold() const {
    return static_cast<int>(heap_.size()) == k_ ? heap_.front().score : -std::numeric_limits<float>::infinity();
  }
  std::vector<Hit> take() {
    std::sort(heap_.begin(), heap_.end(), better);
    return std::move(heap_);
  }

 private:
  int k_;
  const std::vector<int64_t>* exclude_;
  std::vector<Hit> heap_;  // heap ordered by `better`: front is the worst kept hit
};

}  // namespace

PackedCatalog::PackedCatalog(const float* rows, int64_t n, int64_t dim) : rows_(n), dim_(dim) { pack(rows); }

PackedCatalog::PackedCatalog(std::vector<float> rows, int64_t dim)
    : rows_fp32_(std::move(rows)), rows_(dim > 0 ? static_cast<int64_t>(rows_fp32_.size()) / dim : 0), dim_(dim) {
  RT_CHECK(dim > 0 && static_cast<int64_t>(rows_fp32_.size()) == rows_ * dim, "PackedCatalog: ",
           rows_fp32_.size(), " values are not whole rows of ", dim);
  pack(rows_fp32_.data());
}

void PackedCatalog::pack(const float* rows) {
  const int64_t n = rows_, dim = dim_;
  data_.assign(static_cast<size_t>(panels() * dim * kPanelRows), 0.0f);
  double max_norm2 = 0.0, max_l1 = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    float* panel = data_.data() + (r / kPanelRows) * dim * kPanelRows;
    const int64_t j = r % kPanelRows;
    double norm2 = 0.0, l1 = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      const float v = rows[r * dim + d];
      panel[d * kPanelRows + j] = v;
      norm2 += static_cast<double>(v) * v;
      l1 += std::fabs(static_cast<double>(v));
    }
    // A NaN row makes the maxima NaN (and so no 8-bit panels below).
    if (!(norm2 <= max_norm2)) max_norm2 = norm2;
    if (!(l1 <= max_l1)) max_l1 = l1;
  }
  max_row_norm_ = std::sqrt(max_norm2);
  // Sums of up to kMaxInt8Dim terms in double: relative error below 2^-42, covered here once.
  max_row_l1_ = max_l1 * (1.0 + std::ldexp(1.0, -40));
  packInt8(rows);
}

void PackedCatalog::packInt8(const float* rows) {
  // Only where the integer pass is used, and only for rows its error bound holds for: finite and far from
  // overflow (the fp32 scores it stands for must be finite), and not all zero (no scale). Otherwise every
  // query takes the fp32 scan.
  const int64_t n = rows_, dim = dim_;
  if (!int8PrefilterAvailable() || dim > kMaxInt8Dim || !(max_row_norm_ < 1e18)) return;
  double max_abs = 0.0;
  for (int64_t i = 0; i < n * dim; ++i) max_abs = std::max(max_abs, std::fabs(static_cast<double>(rows[i])));
  if (!(max_abs > 0.0)) return;
  const double scale = max_abs / 127.0;
  const int64_t q4 = quads();
  if (rows_fp32_.empty()) rows_fp32_.assign(rows, rows + n * dim);
  int8_.assign(static_cast<size_t>(panels() * q4 * 4 * kPanelRows), 0);
  int8_bias_.assign(static_cast<size_t>(panels() * kPanelRows), 0);
  double max_error = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    int8_t* panel = int8_.data() + (r / kPanelRows) * q4 * 4 * kPanelRows;
    const int64_t j = r % kPanelRows;
    int32_t sum = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const double v = rows[r * dim + d];
      const int stored = quantize(v, scale);
      panel[int8Offset(d, j)] = static_cast<int8_t>(stored);
      sum += stored;
      max_error = std::max(max_error, std::fabs(v - scale * stored));
    }
    int8_bias_[r] = 128 * sum;  // rows are numbered as panels x kPanelRows + j
  }
  // The product scale x stored and the difference each round once in double (2^-53 of |v| or less each).
  int8_max_error_ = max_error + max_abs * std::ldexp(1.0, -50);
  int8_scale_ = scale;
}

std::vector<std::vector<Hit>> topK(const PackedCatalog& catalog, const std::vector<Query>& queries) {
  return catalog.hasInt8() ? topKInt8Prefilter(catalog, queries) : topKFp32Scan(catalog, queries);
}

std::vector<std::vector<Hit>> topKFp32Scan(const PackedCatalog& catalog, const std::vector<Query>& queries) {
  const int64_t dim = catalog.dim();
  const int b = static_cast<int>(queries.size());
  // Queries gathered into one contiguous [b x dim] block so the kernel reads them with a fixed stride.
  std::vector<float> q(static_cast<size_t>(b) * dim);
  std::vector<TopK> best;
  best.reserve(b);
  for (int i = 0; i < b; ++i) {
    RT_CHECK(queries[i].k >= 1, "k must be positive");
    std::memcpy(q.data() + i * dim, queries[i].vector, dim * sizeof(float));
    best.emplace_back(queries[i].k, queries[i].exclude);
  }
  const int per_group = evenGroupSize(b, kGroup);
  float scores[kMaxGroup * kPanelRows];
  for (int64_t p = 0; p < catalog.panels(); ++p) {
    const float* panel = catalog.panel(p);
    const int64_t first = p * kPanelRows;
    const int valid = static_cast<int>(std::min<int64_t>(kPanelRows, catalog.rows() - first));
    for (int g = 0; g < b; g += per_group) {
      const int m = std::min(per_group, b - g);
      kernel(m, q.data() + g * dim, dim, panel, scores);
      for (int i = 0; i < m; ++i) {
        const float* s = scores + i * kPanelRows;
        TopK& top = best[g + i];
        if (!anyAbove(s, top.entryThreshold())) continue;
        for (int j = 0; j < valid; ++j) top.offer(first + j, s[j]);
      }
    }
  }
  std::vector<std::vector<Hit>> out;
  out.reserve(b);
  for (auto& t : best) out.push_back(t.take());
  return out;
}

Int8Query quantizeQuery(const PackedCatalog& catalog, const float* query) {
  const int64_t dim = catalog.dim();
  Int8Query out;
  out.words.assign(static_cast<size_t>(catalog.quads()), 0x80808080u);  // stored 0 in every byte
  double max_abs = 0.0, norm2 = 0.0;
  bool finite = true;
  for (int64_t d = 0; d < dim; ++d) {
    finite = finite && std::isfinite(query[d]);
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(query[d])));
    norm2 += static_cast<double>(query[d]) * query[d];
  }
  if (!catalog.hasInt8() || !finite || !(max_abs > 0.0) || !(norm2 < 1e36)) return out;
  const double scale = max_abs / 127.0;
  double max_error = 0.0;
  int64_t l1 = 0;  // of the stored values
  for (int64_t d = 0; d < dim; ++d) {
    const double x = query[d];
    const int stored = quantize(x, scale);
    const uint32_t byte = static_cast<uint32_t>(stored + 128);
    out.words[d / 4] = (out.words[d / 4] & ~(0xFFu << (8 * (d % 4)))) | (byte << (8 * (d % 4)));
    max_error = std::max(max_error, std::fabs(x - scale * stored));
    l1 += std::abs(stored);
  }
  max_error += max_abs * std::ldexp(1.0, -50);  // as for the catalog's
  // With q_d = scale stored(q_d) + e_d and v_d = s stored(v_d) + f_d (s = catalog.int8Scale()):
  //   q.v - scale s I = sum_d scale stored(q_d) f_d + sum_d e_d v_d,
  // so |that| <= scale |stored(q)|_1 max|f| + max|e| |v|_1. The fp32 kernels' own score is within
  // gamma_dim sum_d |q_d v_d| <= gamma_dim |q| |v| of q.v (one rounding per fused multiply-add; the unit
  // round-off is taken as 2^-23 so that any faithful rounding is covered; 1e-30 covers denormal products).
  const double u = std::ldexp(1.0, -23);
  const double gamma = dim * u / (1.0 - dim * u);
  const double bound = scale * static_cast<double>(l1) * catalog.int8MaxError() + max_error * catalog.maxRowL1() +
                       gamma * std::sqrt(norm2) * catalog.maxRowNorm() + 1e-30;
  out.scale = scale;
  out.bound = bound * (1.0 + std::ldexp(1.0, -40));  // the rounding of this sum
  out.covered = std::isfinite(out.bound);
  return out;
}

int64_t int8Dot(const PackedCatalog& catalog, const Int8Query& query, int64_t row) {
  RT_CHECK(catalog.hasInt8() && row >= 0 && row < catalog.rows(), "int8Dot: no 8-bit row ", row);
  const int8_t* panel = catalog.panelInt8(row / kPanelRows);
  const int64_t j = row % kPanelRows;
  int64_t sum = 0;
  for (int64_t d = 0; d < catalog.dim(); ++d) {
    const int stored_q = static_cast<int>((query.words[d / 4] >> (8 * (d % 4))) & 0xFFu) - 128;
    sum += static_cast<int64_t>(stored_q) * panel[int8Offset(d, j)];
  }
  return sum;
}

std::vector<std::vector<Hit>> topKInt8Prefilter(const PackedCatalog& catalog, const std::vector<Query>& queries) {
  RT_CHECK(catalog.hasInt8(), "the catalog has no 8-bit panels (CPU without AVX512-VNNI?)");
  const int64_t quads = catalog.quads();
  const int b = static_cast<int>(queries.size());
  // Pass 1 scores every row in integers and keeps, per query, an approximate top-k and every row whose
  // integer score I is within a window W of the approximate k-th best: W is 2 x bound in the integers'
  // units (bound / (query scale x catalog scale)), so any row of the exact top-k is among them (its exact
  // score is at least the k-th exact one, which is at least the approximate k-th minus a bound, and its
  // approximate score is within a bound of its exact one). Integer scores compare exactly, and are exact
  // in a float (|I| < 2^24) for the heap. Pass 2 rescores only the kept rows in fp32, exactly as the fp32
  // kernels do, so the answer is the fp32 scan's, bit for bit.
  //
  // A query the bound does not cover (a value that is not finite, a zero query, a norm near overflow), or
  // one with so many rows inside the window that rescoring them would cost more than the fp32 scan (a
  // dense cluster of near-duplicates), is answered by the fp32 scan instead.
  struct State {
    TopK approx;
    std::vector<std::pair<int64_t, int32_t>> candidates;  // (row, integer score), rows ascending
    int32_t window;  // W, in the integer scores' units
    bool fp32 = false;  // answered by the fp32 scan
  };
  constexpr double kMaxWindow = 1 << 25;  // floors stay inside int32 (|I| < 2^24)
  std::vector<uint32_t> q(static_cast<size_t>(b) * quads);
  std::vector<State> state;
  state.reserve(b);
  for (int i = 0; i < b; ++i) {
    RT_CHECK(queries[i].k >= 1, "k must be positive");
    const Int8Query iq = quantizeQuery(catalog, queries[i].vector);
    std::copy(iq.words.begin(), iq.words.end(), q.begin() + i * quads);
    // One more unit than the bound asks, for the rounding of this quotient.
    const double window = iq.covered ? std::ceil(2.0 * iq.bound / (iq.scale * catalog.int8Scale())) + 1.0 : kMaxWindow;
    const bool covered = iq.covered && window < kMaxWindow;
    // No exclusion list for the heap: the scan checks it once, before a row reaches heap or candidates.
    state.push_back({TopK(queries[i].k, nullptr), {}, covered ? static_cast<int32_t>(window) : 0, !covered});
  }
  const auto excluded = [&](int i, int64_t row) {
    const auto* ex = queries[i].exclude;
    return ex != nullptr && std::find(ex->begin(), ex->end(), row) != ex->end();
  };
  // Per query, the lowest integer score still worth keeping: INT32_MIN until k rows were seen, INT32_MAX
  // once the query went to the fp32 scan. Updated whenever its approximate top-k moves.
  const auto floorOf = [](const State& st) {
    if (st.fp32) return std::numeric_limits<int32_t>::max();
    const float kth = st.approx.entryThreshold();
    return kth == -std::numeric_limits<float>::infinity() ? std::numeric_limits<int32_t>::min()
                                                            : static_cast<int32_t>(kth) - st.window;
  };
  // Kept small: rows that fell below the window since they were taken are dropped now and then; when
  // the window itself holds too many, the query goes to the fp32 scan.
  const auto prune = [&](State& st, int k) {
    const int32_t floor = floorOf(st);
    auto& c = st.candidates;
    c.erase(std::remove_if(c.begin(), c.end(), [&](const auto& x) { return x.second < floor; }), c.end());
    if (c.size() > kMaxWindowRows + 2 * static_cast<size_t>(k)) {
      st.fp32 = true;
      c.clear();
      c.shrink_to_fit();
    }
  };
  std::vector<int32_t> floors(static_cast<size_t>(b));
  for (int i = 0; i < b; ++i) {
    floors[i] = floorOf(state[i]);
    state[i].candidates.reserve(64 + 4 * static_cast<size_t>(queries[i].k));
  }
  const int per_group = evenGroupSize(b, kGroupAvx512);
  int32_t scores[kMaxGroup * kPanelRows];
  uint32_t passed[kMaxGroup];
  static_assert(kPanelRows == 32, "a panel's rows are one 32-bit mask");
  for (int64_t p = 0; p < catalog.panels(); ++p) {
    const int8_t* panel = catalog.panelInt8(p);
    const int32_t* bias = catalog.int8Bias(p);
    const int64_t first = p * kPanelRows;
    const int64_t valid = std::min<int64_t>(kPanelRows, catalog.rows() - first);
    const uint32_t valid_rows = valid == kPanelRows ? ~0u : (1u << valid) - 1;  // not the padding
    for (int g = 0; g < b; g += per_group) {
      const int m = std::min(per_group, b - g);
      if (std::all_of(state.begin() + g, state.begin() + g + m, [](const State& st) { return st.fp32; })) continue;
      uint32_t hits = kernelInt8Dispatch(m, q.data() + g * quads, quads, panel, bias, floors.data() + g, scores,
                                         passed, std::make_integer_sequence<int, kGroupAvx512>{});
      for (; hits != 0; hits &= hits - 1) {
        const int i = __builtin_ctz(hits);
        const int32_t* s = scores + i * kPanelRows;
        State& st = state[g + i];
        if (st.fp32) continue;
        // In row order, as the heap's tie rule needs; a row that entered the heap may lift the floor, and
        // the rows after it are held to the floor of when the kernel ran, which is lower: kept, pruned later.
        for (uint32_t rows = passed[i] & valid_rows; rows != 0; rows &= rows - 1) {
          const int j = __builtin_ctz(rows);
          if (excluded(g + i, first + j)) continue;
          st.approx.offer(first + j, static_cast<float>(s[j]));
          st.candidates.emplace_back(first + j, s[j]);
        }
        if (st.candidates.size() > 2 * kMaxWindowRows + 4 * static_cast<size_t>(queries[g + i].k)) {
          prune(st, queries[g + i].k);
        }
        floors[g + i] = floorOf(st);
      }
    }
  }
  std::vector<std::vector<Hit>> out(b);
  std::vector<Query> fallback;
  std::vector<int> fallback_index;
  for (int i = 0; i < b; ++i) {
    if (state[i].fp32) {
      fallback.push_back(queries[i]);
      fallback_index.push_back(i);
    }
  }
  if (!fallback.empty()) {
    auto answers = topKFp32Scan(catalog, fallback);
    for (size_t f = 0; f < fallback.size(); ++f) out[fallback_index[f]] = std::move(answers[f]);
  }
  std::vector<int64_t> rescore_rows;
  std::vector<float> rescored;
  for (int i = 0; i < b; ++i) {
    State& st = state[i];
    if (st.fp32) continue;
    const int32_t floor = floorOf(st);
    rescore_rows.clear();
    for (const auto& [row, score] : st.candidates) {
      if (score >= floor) rescore_rows.push_back(row);
    }
    rescored.resize(rescore_rows.size());
    exactScores(catalog, rescore_rows.data(), rescore_rows.size(), queries[i].vector, rescored.data());
    TopK exact(queries[i].k, nullptr);
    for (size_t c = 0; c < rescore_rows.size(); ++c) exact.offer(rescore_rows[c], rescored[c]);
    out[i] = exact.take();
  }
  return out;
}

std::vector<Hit> bruteForceTopK(const float* rows, int64_t n, int64_t dim, const float* query, int k,
                                const std::vector<int64_t>& exclude) {
  std::vector<Hit> all;
  for (int64_t r = 0; r < n; ++r) {
    if (std::find(exclude.begin(), exclude.end(), r) != exclude.end()) continue;
    double s = 0.0;
    for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(rows[r * dim + d]) * query[d];
    all.push_back({r, static_cast<float>(s)});
  }
  const size_t keep = std::min<size_t>(static_cast<size_t>(k), all.size());
  std::partial_sort(all.begin(), all.begin() + keep, all.end(), better);
  all.resize(keep);
  return all;
}

bool usingSimdKernel() { return kSimd != Simd::kNone; }

bool int8PrefilterAvailable() { return kSimd == Simd::kAvx512Vnni; }

const char* simdKernelName() {
  switch (kSimd) {
    case Simd::kAvx512Vnni: return "avx512-vnni";
    case Simd::kAvx512: return "avx512";
    case Simd::kAvx2: return "avx2";
    case Simd::kNone: break;
  }
  return "generic";
}

}  // namespace ringtrain::serve
