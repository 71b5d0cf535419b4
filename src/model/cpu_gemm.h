// A small single-thread float32 GEMM for the SGNS tower on CPU. Debian's LibTorch multiplies through the
// reference (netlib) BLAS at ~6 GFLOP/s; the tower's six [1024 x 64 x 128] products per step would then
// cost more than everything else together. This kernel (AVX2+FMA, chosen at run time) packs a 4-row panel
// of op(A) and all of op(B) and keeps a 4 x 16 block of C in registers. Without AVX2 it falls back to
// at::addmm.
#pragma once

#include <ATen/core/Tensor.h>

namespace ringtrain::model::detail {

// C[M, N] = op(A) @ op(B) + beta * C, all float32, contiguous, on CPU; op(X) = X^T when trans_x.
// beta is 0 or 1 (0 ignores C's old contents, NaN included).
void gemm(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, at::Tensor& c, float beta);

// True when gemm() uses its own kernel (else at::addmm).
bool gemmUsesKernel();

}  // namespace ringtrain::model::detail
