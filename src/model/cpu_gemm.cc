#include "model/cpu_gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>

#include "ringtrain/core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RINGTRAIN_GEMM_X86 1
#endif

namespace ringtrain::model::detail {
namespace {

#ifdef RINGTRAIN_GEMM_X86
// Ap: packed op(A) panel, [K][4] (row r of the panel at Ap[p * 4 + r]); Bp: op(B) packed [K][N].
// Computes rows (rows <= 4) x columns [j0, j1) of C.
__attribute__((target("avx2,fma"))) void panelKernel(const float* ap, const float* bp, int64_t k, int64_t n,
                                                     int64_t j0, int64_t j1, int rows, float* c, int64_t ldc,
                                                     float beta) {
  int64_t j = j0;
  for (; j + 16 <= j1; j += 16) {
    __m256 acc[4][2];
    for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float* bcol = bp + j;
    for (int64_t p = 0; p < k; ++p) {
      const __m256 b0 = _mm256_loadu_ps(bcol + p * n);
      const __m256 b1 = _mm256_loadu_ps(bcol + p * n + 8);
      const float* a = ap + p * 4;
      __m256 a0 = _mm256_broadcast_ss(a + 0);
      acc[0][0] = _mm256_fmadd_ps(a0, b0, acc[0][0]);
      acc[0][1] = _mm256_fmadd_ps(a0, b1, acc[0][1]);
      __m256 a1 = _mm256_broadcast_ss(a + 1);
      acc[1][0] = _mm256_fmadd_ps(a1, b0, acc[1][0]);
      acc[1][1] = _mm256_fmadd_ps(a1, b1, acc[1][1]);
      __m256 a2 = _mm256_broadcast_ss(a + 2);
      acc[2][0] = _mm256_fmadd_ps(a2, b0, acc[2][0]);
      acc[2][1] = _mm256_fmadd_ps(a2, b1, acc[2][1]);
      __m256 a3 = _mm256_broadcast_ss(a + 3);
      acc[3][0] = _mm256_fmadd_ps(a3, b0, acc[3][0]);
      acc[3][1] = _mm256_fmadd_ps(a3, b1, acc[3][1]);
    }
    for (int r = 0; r < rows; ++r) {
      float* crow = c + r * ldc + j;
      if (beta != 0.0f) {
        acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(crow));
        acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(crow + 8));
      }
      _mm256_storeu_ps(crow, acc[r][0]);
      _mm256_storeu_ps(crow + 8, acc[r][1]);
    }
  }
  for (; j < j1; ++j) {
    for (int r = 0; r < rows; ++r) {
      float s = 0.0f;
      for (int64_t p = 0; p < k; ++p) s += ap[p * 4 + r] * bp[p * n + j];
      float* cv = c + r * ldc + j;
      *cv = beta != 0.0f ? *cv + s : s;
    }
  }
}

bool haveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return have;
}
#endif

}  // namespace

bool gemmUsesKernel() {
#ifdef RINGTRAIN_GEMM_X86
  return haveAvx2();
#else
  return false;
#endif
}

void gemm(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, at::Tensor& c, float beta) {
  RT_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "gemm takes matrices");
  const int64_t m = trans_a ? a.size(1) : a.size(0);
  const int64_t k = trans_a ? a.size(0) : a.size(1);
  const int64_t kb = trans_b ? b.size(1) : b.size(0);
  const int64_t n = trans_b ? b.size(0) : b.size(1);
  RT_CHECK_EQ(k, kb, "gemm inner dimensions");
  RT_CHECK(c.size(0) == m && c.size(1) == n, "gemm output shape");
  const bool fast = gemmUsesKernel() && a.is_cpu() && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
                    c.scalar_type() == at::kFloat && a.is_contiguous() && b.is_contiguous() && c.is_contiguous();
  if (!fast) {
    const at::Tensor oa = trans_a ? a.t() : a;
    const at::Tensor ob = trans_b ? b.t() : b;
    if (beta == 0.0f) {
      at::mm_out(c, oa, ob);
    } else {
      c.addmm_(oa, ob);
    }
    return;
  }
#ifdef RINGTRAIN_GEMM_X86
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  // op(B) as [K][N] row-major.
  std::vector<float> bp_store;
  const float* bp = pb;
  if (trans_b) {
    bp_store.resize(static_cast<size_t>(k * n));
    for (int64_t j = 0; j < n; ++j) {
      const float* src = pb + j * k;  // b is [N, K]
      for (int64_t p = 0; p < k; ++p) bp_store[p * n + j] = src[p];
    }
    bp = bp_store.data();
  }
  // All of op(A) as 4-row panels [M/4][K][4] (zero-padded), then column tiles outermost so a tile of op(B)
  // stays in cache while every panel passes over it.
  const int64_t panels = (m + 3) / 4;
  std::vector<float> ap(static_cast<size_t>(panels * k * 4), 0.0f);
  for (int64_t i = 0; i < m; i += 4) {
    const int rows = static_cast<int>(std::min<int64_t>(4, m - i));
    float* panel = ap.data() + (i / 4) * k * 4;
    if (trans_a) {  // a is [K, M]
      for (int64_t p = 0; p < k; ++p) {
        const float* src = pa + p * m + i;
        for (int r = 0; r < rows; ++r) panel[p * 4 + r] = src[r];
      }
    } else {  // a is [M, K]
      for (int r = 0; r < rows; ++r) {
        const float* src = pa + (i + r) * k;
        for (int64_t p = 0; p < k; ++p) panel[p * 4 + r] = src[p];
      }
    }
  }
  // ~32 KiB of op(B) per tile.
  const int64_t tile = std::max<int64_t>(16, (8192 / std::max<int64_t>(k, 1)) / 16 * 16);
  for (int64_t j0 = 0; j0 < n; j0 += tile) {
    const int64_t j1 = std::min(n, j0 + tile);
    for (int64_t i = 0; i < m; i += 4) {
      const int rows = static_cast<int>(std::min<int64_t>(4, m - i));
      panelKernel(ap.data() + (i / 4) * k * 4, bp, k, n, j0, j1, rows, pc + i * n, n, beta);
    }
  }
#endif
}

}  // namespace ringtrain::model::detail
