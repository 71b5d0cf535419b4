// Exact top-k scorer; the algorithm is described in include/ringtrain/serve/scorer.h.
#include "ringtrain/serve/scorer.h"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cfloat>
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
// Rows within the bfloat16 prefilter's window, beyond which rescoring them one by one would cost about as
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

enum class Simd { kNone, kAvx2, kAvx512, kAvx512Bf16 };

bool cpuHasAvx512Bf16() {
  // __builtin_cpu_supports has no name for AVX512-BF16 in GCC 12: CPUID leaf 7, sub-leaf 1, EAX bit 5.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__builtin_cpu_supports("avx512f") || __get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  return (eax >> 5) & 1;
}

Simd detectSimd() {
  __builtin_cpu_init();
  // RINGTRAIN_SCORER_SIMD=avx512|avx2|none caps the kernel, for comparing them: every cap gives the same
  // top-k; the SIMD ones give the same scores bit for bit (the generic loop rounds differently).
  const char* cap = std::getenv("RINGTRAIN_SCORER_SIMD");
  const std::string limit = cap == nullptr ? "" : cap;
  if (limit == "none") return Simd::kNone;
  if (limit.empty() && cpuHasAvx512Bf16()) return Simd::kAvx512Bf16;
  if (limit != "avx2" && __builtin_cpu_supports("avx512f")) return Simd::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::kAvx2;
  return Simd::kNone;
}
const Simd kSimd = detectSimd();
const bool kWide = kSimd == Simd::kAvx512 || kSimd == Simd::kAvx512Bf16;
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
    case Simd::kAvx512Bf16:
      return kernelAvx512Dispatch(m, q, dim, panel, out, std::make_integer_sequence<int, kGroupAvx512>{});
    case Simd::kAvx2: break;
  }
  switch (m) {
    case 1: return kernelAvx2<1>(q, dim, panel, out);
    case 2: return kernelAvx2<2>(q, dim, panel, out);
    default: return kernelAvx2<3>(q, dim, panel, out);
  }
}

// bfloat16, rounded to nearest even (inputs finite).
uint16_t toBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Approximate scores of up to kGroupAvx512 queries against one bfloat16 panel, with VDPBF16PS: per step a
// pair of dimensions, 2 products per lane, 32 rows in two registers. q holds each query's dimension pairs
// as packed bf16 (stride `pairs`); out is [m x kPanelRows] fp32. Returns a mask with bit i set when some
// score of query i is at least floors[i]: compared in registers, since most panels hold nothing for most
// queries once their top-k has filled.
template <int M>
__attribute__((target("avx512f,avx512bf16"))) uint32_t kernelBf16(const uint32_t* q, int64_t pairs, const uint16_t* panel,
                                                                  const float* floors, float* out) {
  __m512 acc[M][2];
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh c0 = (__m512bh)_mm512_loadu_si512(panel + p * 2 * kPanelRows);
    const __m512bh c1 = (__m512bh)_mm512_loadu_si512(panel + p * 2 * kPanelRows + kPanelRows);
    for (int i = 0; i < M; ++i) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[i * pairs + p]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], c0, b);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], c1, b);
    }
  }
  uint32_t hits = 0;
  for (int i = 0; i < M; ++i) {
    _mm512_storeu_ps(out + i * kPanelRows, acc[i][0]);
    _mm512_storeu_ps(out + i * kPanelRows + 16, acc[i][1]);
    const __m512 floor = _mm512_set1_ps(floors[i]);
    const __mmask16 any = _mm512_cmp_ps_mask(acc[i][0], floor, _CMP_GE_OQ) | _mm512_cmp_ps_mask(acc[i][1], floor, _CMP_GE_OQ);
    hits |= static_cast<uint32_t>(any != 0) << i;
  }
  return hits;
}

template <int... Ms>
uint32_t kernelBf16Dispatch(int m, const uint32_t* q, int64_t pairs, const uint16_t* panel, const float* floors,
                            float* out, std::integer_sequence<int, Ms...>) {
  uint32_t hits = 0;
  ((m == Ms + 1 ? (hits = kernelBf16<Ms + 1>(q, pairs, panel, floors, out), true) : false) || ...);
  return hits;
}

// Queries per kernel call for a batch of b: groups of even size (20 queries: 10 + 10, not 12 + 8), since a
// small remainder group would read the panel again for little work.
int evenGroupSize(int b, int max_group) {
  const int groups = (b + max_group - 1) / max_group;
  return (b + groups - 1) / groups;
}

// Values the bfloat16 error bound covers: finite, and zero or normal (VDPBF16PS reads a denormal as zero).
bool bf16BoundHolds(float x) { return std::isfinite(x) && (x == 0.0f || std::fabs(x) >= FLT_MIN); }

// One row's score exactly as the fp32 SIMD kernels compute it: one fused multiply-add per dimension, in
// order, from zero (so the bfloat16 path ends with the same bits as the fp32 one). From the row-major
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
  double max_norm2 = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    float* panel = data_.data() + (r / kPanelRows) * dim * kPanelRows;
    const int64_t j = r % kPanelRows;
    double norm2 = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      panel[d * kPanelRows + j] = rows[r * dim + d];
      norm2 += static_cast<double>(rows[r * dim + d]) * rows[r * dim + d];
    }
    if (!(norm2 <= max_norm2)) max_norm2 = norm2;  // a NaN row makes the maximum NaN (no bfloat16 below)
  }
  max_row_norm_ = std::sqrt(max_norm2);
  // The bfloat16 copy, only where it is used, and only for rows its error bound holds for: finite, far
  // from overflow, and no denormal values (VDPBF16PS reads them as zero, an error the bound does not
  // cover). Otherwise every query takes the fp32 scan.
  if (!bf16PrefilterAvailable() || !(max_row_norm_ < 1e18)) return;
  for (int64_t i = 0; i < n * dim; ++i) {
    if (!bf16BoundHolds(rows[i])) return;
  }
  const int64_t pairs = (dim + 1) / 2;
  if (rows_fp32_.empty()) rows_fp32_.assign(rows, rows + n * dim);
  bf16_.assign(static_cast<size_t>(panels() * pairs * 2 * kPanelRows), 0);
  for (int64_t r = 0; r < n; ++r) {
    uint16_t* panel = bf16_.data() + (r / kPanelRows) * pairs * 2 * kPanelRows;
    const int64_t j = r % kPanelRows;
    for (int64_t d = 0; d < dim; ++d) panel[(d / 2) * 2 * kPanelRows + 2 * j + (d % 2)] = toBf16(rows[r * dim + d]);
  }
}

std::vector<std::vector<Hit>> topK(const PackedCatalog& catalog, const std::vector<Query>& queries) {
  return catalog.hasBf16() ? topKBf16Prefilter(catalog, queries) : topKFp32Scan(catalog, queries);
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

double bf16ScoreMargin(int64_t dim, double query_norm, double max_row_norm) {
  // |approximate - exact| <= e * sum_d |q_d v_d| <= e * |q| |v| (Cauchy-Schwarz), where e covers rounding
  // q and v to bfloat16 (2^-8 each, relative) and two fp32 sums of `dim` terms (gamma_dim each, taken with a
  // unit round-off of 2^-23 so that any faithful rounding of the hardware's adds is covered). The 1.001 and
  // 1e-30 cover the rounding of this product and of the flushed denormals.
  const double u = std::ldexp(1.0, -23);
  const double gamma = dim * u / (1.0 - dim * u);
  const double e = std::ldexp(1.0, -7) + std::ldexp(1.0, -16) + 2.02 * gamma;
  return (e * query_norm * max_row_norm) * 1.001 + 1e-30;
}

std::vector<std::vector<Hit>> topKBf16Prefilter(const PackedCatalog& catalog, const std::vector<Query>& queries) {
  RT_CHECK(catalog.hasBf16(), "the catalog has no bfloat16 panels (CPU without AVX512-BF16?)");
  const int64_t dim = catalog.dim(), pairs = (dim + 1) / 2;
  const int b = static_cast<int>(queries.size());
  // Pass 1 scores every row in bfloat16 and keeps, per query, an approximate top-k and every row whose
  // approximate score is within 2 x margin of the approximate k-th best: any row of the exact top-k is
  // among them (its exact score is at least the k-th exact one, which is at least the approximate k-th
  // minus a margin, and its approximate score is within a margin of its exact one). Pass 2 rescores only
  // those rows in fp32, exactly as the fp32 kernels do, so the answer is the fp32 scan's, bit for bit.
  //
  // A query the bound does not cover (a value that is not finite or is denormal, a norm near overflow),
  // or one with so many rows inside the window that rescoring them would cost more than the fp32 scan (a
  // zero query, a dense cluster of near-duplicates), is answered by the fp32 scan instead.
  struct State {
    TopK approx;
    std::vector<std::pair<int64_t, float>> candidates;  // (row, approximate score), rows ascending
    float margin;  // 2 x the bound on |approximate - exact|
    bool fp32 = false;  // answered by the fp32 scan
  };
  std::vector<uint32_t> q(static_cast<size_t>(b) * pairs, 0);
  std::vector<State> state;
  state.reserve(b);
  for (int i = 0; i < b; ++i) {
    RT_CHECK(queries[i].k >= 1, "k must be positive");
    double norm2 = 0.0;
    bool covered = true;
    for (int64_t d = 0; d < dim; ++d) {
      const float x = queries[i].vector[d];
      covered = covered && bf16BoundHolds(x);
      norm2 += static_cast<double>(x) * x;
      q[i * pairs + d / 2] |= static_cast<uint32_t>(toBf16(x)) << (16 * (d % 2));
    }
    const float margin = static_cast<float>(2.0 * bf16ScoreMargin(dim, std::sqrt(norm2), catalog.maxRowNorm()));
    covered = covered && norm2 < 1e36 && std::isfinite(margin);
    state.push_back({TopK(queries[i].k, queries[i].exclude), {}, margin, !covered});
  }
  const auto excluded = [&](int i, int64_t row) {
    const auto* ex = queries[i].exclude;
    return ex != nullptr && std::find(ex->begin(), ex->end(), row) != ex->end();
  };
  // Kept small: rows that fell below the window since they were taken are dropped now and then; when
  // the window itself holds too many, the query goes to the fp32 scan.
  const auto prune = [](State& st, int k) {
    const float floor = st.approx.entryThreshold() - st.margin;
    auto& c = st.candidates;
    c.erase(std::remove_if(c.begin(), c.end(), [&](const auto& x) { return x.second < floor; }), c.end());
    if (c.size() > kMaxWindowRows + 2 * static_cast<size_t>(k)) {
      st.fp32 = true;
      c.clear();
      c.shrink_to_fit();
    }
  };
  // Per query, the lowest approximate score still worth keeping: -inf until k rows were seen, +inf once
  // the query went to the fp32 scan. Updated whenever its approximate top-k moves.
  std::vector<float> floors(static_cast<size_t>(b));
  const auto floorOf = [](const State& st) {
    return st.fp32 ? std::numeric_limits<float>::infinity() : st.approx.entryThreshold() - st.margin;
  };
  for (int i = 0; i < b; ++i) floors[i] = floorOf(state[i]);
  const int per_group = evenGroupSize(b, kGroupAvx512);
  float scores[kMaxGroup * kPanelRows];
  for (int64_t p = 0; p < catalog.panels(); ++p) {
    const uint16_t* panel = catalog.panelBf16(p);
    const int64_t first = p * kPanelRows;
    const int valid = static_cast<int>(std::min<int64_t>(kPanelRows, catalog.rows() - first));
    for (int g = 0; g < b; g += per_group) {
      const int m = std::min(per_group, b - g);
      if (std::all_of(state.begin() + g, state.begin() + g + m, [](const State& st) { return st.fp32; })) continue;
      uint32_t hits = kernelBf16Dispatch(m, q.data() + g * pairs, pairs, panel, floors.data() + g, scores,
                                         std::make_integer_sequence<int, kGroupAvx512>{});
      for (; hits != 0; hits &= hits - 1) {
        const int i = __builtin_ctz(hits);
        const float* s = scores + i * kPanelRows;
        State& st = state[g + i];
        if (st.fp32) continue;  // a query outside the bound may score inf against its +inf floor
        const float floor = floors[g + i];
        for (int j = 0; j < valid; ++j) {
          if (!(s[j] >= floor) || excluded(g + i, first + j)) continue;
          st.approx.offer(first + j, s[j]);
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
    const float floor = st.approx.entryThreshold() - st.margin;
    rescore_rows.clear();
    for (const auto& [row, approx] : st.candidates) {
      if (approx >= floor) rescore_rows.push_back(row);
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

bool bf16PrefilterAvailable() { return kSimd == Simd::kAvx512Bf16; }

const char* simdKernelName() {
  switch (kSimd) {
    case Simd::kAvx512Bf16: return "avx512-bf16";
    case Simd::kAvx512: return "avx512";
    case Simd::kAvx2: return "avx2";
    case Simd::kNone: break;
  }
  return "generic";
}

}  // namespace ringtrain::serve
