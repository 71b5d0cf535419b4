// Exact top-k scorer; the algorithm is described in include/ringtrain/serve/scorer.h.
#include "ringtrain/serve/scorer.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "ringtrain/core/error.h"

namespace ringtrain::serve {
namespace {

// Queries per kernel call. A panel row is 32 floats: 4 AVX2 registers or 2 AVX-512 ones. AVX2: 3 queries
// x 4 accumulators + 4 panel registers fill the 16. AVX-512: 12 x 2 accumulators + 2 panel registers + a
// broadcast, 27 of 32. Per step over d a kernel loads the panel row and one value per query; the wide
// panel makes each of those loads feed several FMAs, so the loads do not limit the FMAs.
constexpr int kGroupAvx2 = 3;
constexpr int kGroupAvx512 = 12;
constexpr int kMaxGroup = kGroupAvx512;

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

enum class Simd { kNone, kAvx2, kAvx512 };

Simd detectSimd() {
  __builtin_cpu_init();
  // RINGTRAIN_SCORER_SIMD=avx2|none caps the kernel (for comparing them; the scores are the same).
  const char* cap = std::getenv("RINGTRAIN_SCORER_SIMD");
  const std::string limit = cap == nullptr ? "" : cap;
  if (limit == "none") return Simd::kNone;
  if (limit != "avx2" && __builtin_cpu_supports("avx512f")) return Simd::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::kAvx2;
  return Simd::kNone;
}
const Simd kSimd = detectSimd();
const int kGroup = kSimd == Simd::kAvx512 ? kGroupAvx512 : kGroupAvx2;

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
      return kernelAvx512Dispatch(m, q, dim, panel, out, std::make_integer_sequence<int, kGroupAvx512>{});
    case Simd::kAvx2: break;
  }
  switch (m) {
    case 1: return kernelAvx2<1>(q, dim, panel, out);
    case 2: return kernelAvx2<2>(q, dim, panel, out);
    default: return kernelAvx2<3>(q, dim, panel, out);
  }
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
  if (kSimd == Simd::kAvx512) return anyAboveAvx512(scores, threshold);
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

PackedCatalog::PackedCatalog(const float* rows, int64_t n, int64_t dim) : rows_(n), dim_(dim) {
  data_.assign(static_cast<size_t>(panels() * dim * kPanelRows), 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    float* panel = data_.data() + (r / kPanelRows) * dim * kPanelRows;
    const int64_t j = r % kPanelRows;
    for (int64_t d = 0; d < dim; ++d) panel[d * kPanelRows + j] = rows[r * dim + d];
  }
}

std::vector<std::vector<Hit>> topK(const PackedCatalog& catalog, const std::vector<Query>& queries) {
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
  // Groups of even size (20 queries: 10 + 10, not 12 + 8): a small remainder group would read the panel
  // again for little work.
  const int groups = (b + kGroup - 1) / kGroup;
  const int per_group = (b + groups - 1) / groups;
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

const char* simdKernelName() {
  switch (kSimd) {
    case Simd::kAvx512: return "avx512";
    case Simd::kAvx2: return "avx2";
    case Simd::kNone: break;
  }
  return "generic";
}

}  // namespace ringtrain::serve
