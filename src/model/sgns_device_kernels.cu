// One warp per example: its lanes split the embedding dimension, so each row a warp reads is one coalesced
// sweep (a 128-float row is one float4 per lane), and a dot product ends in a warp shuffle reduction.
#include "model/sgns_device_kernels.h"

#include <cstdint>
#include <cstdio>
#include <initializer_list>

#include <cuda_runtime.h>

namespace ringtrain::model::detail {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float warpSum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// log(sigmoid(x)) and sigmoid(x) without overflow, as the CPU kernels compute them.
__device__ __forceinline__ float logSigmoid(float x) {
  return x >= 0.0f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}
__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

__device__ __forceinline__ int64_t checkedRow(int64_t id, int64_t rows, const char* what) {
  if (id < 0 || id >= rows) {
    printf("ringtrain sgns kernel: %s id %lld outside [0, %lld)\n", what, static_cast<long long>(id),
           static_cast<long long>(rows));
    __trap();
  }
  return id;
}

__device__ __forceinline__ const float* queryRow(const SgnsQueryRows& q, int64_t b, int dim) {
  const int64_t row = q.u_rows == nullptr ? b : checkedRow(q.u_rows[b], q.u_row_count, "center");
  return q.u + row * dim;
}

__device__ __forceinline__ int64_t candidate(const SgnsCandidates& c, int cands, int64_t b, int j) {
  return j == 0 ? c.context[b] : c.negatives[b * (cands - 1) + (j - 1)];
}

// A lane's share of <u, v>: float4 loads when kVec4 (dim % 4 == 0, rows 16-byte aligned).
template <bool kVec4>
__device__ __forceinline__ float laneDot(const float* u, const float* v, int dim, int lane) {
  float s = 0.0f;
  if constexpr (kVec4) {
    const float4* u4 = reinterpret_cast<const float4*>(u);
    const float4* v4 = reinterpret_cast<const float4*>(v);
    for (int d = lane; d < dim / 4; d += kWarp) {
      const float4 x = u4[d], y = v4[d];
      s += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
    }
  } else {
    for (int d = lane; d < dim; d += kWarp) s += u[d] * v[d];
  }
  return s;
}

template <bool kVec4>
__global__ void scoreKernel(SgnsScoreArgs a) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  if (b >= a.batch) return;  // b is the same for a whole warp, so whole warps leave and the shuffles stay full
  const float* u = queryRow(a.query, b, a.dim);
  const float inv_batch = 1.0f / static_cast<float>(a.batch);
  float loss = 0.0f;
  for (int j = 0; j < a.cands; ++j) {
    const int64_t row = checkedRow(candidate(a.candidates, a.cands, b, j), a.out_row_count, "context/negative");
    const float s = warpSum(laneDot<kVec4>(u, a.out + row * a.dim, a.dim, lane));
    const float sign = j == 0 ? 1.0f : -1.0f;
    loss -= logSigmoid(sign * s);
    if (lane == 0) a.coef[b * a.cands + j] = -sign * sigmoid(-sign * s) * inv_batch;
  }
  if (lane == 0) a.loss_rows[b] = loss * inv_batch;
}

template <bool kVec4>
__global__ void backwardKernel(SgnsBackwardArgs a) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  if (b >= a.batch) return;
  const float* u = queryRow(a.query, b, a.dim);
  const float scale = *a.grad_output;
  const float* coef = a.coef + b * a.cands;
  for (int j = lane; j < a.cands; j += kWarp) a.out_ids[b * a.cands + j] = candidate(a.candidates, a.cands, b, j);
  float* grad_u = a.grad_u + b * a.dim;
  float* values = a.values + b * a.cands * a.dim;
  if constexpr (kVec4) {
    const int dim4 = a.dim / 4;
    for (int d = lane; d < dim4; d += kWarp) {
      const float4 x = reinterpret_cast<const float4*>(u)[d];
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int j = 0; j < a.cands; ++j) {
        const float c = coef[j] * scale;
        const int64_t row = checkedRow(candidate(a.candidates, a.cands, b, j), a.out_row_count, "context/negative");
        const float4 y = reinterpret_cast<const float4*>(a.out + row * a.dim)[d];
        acc.x += c * y.x;
        acc.y += c * y.y;
        acc.z += c * y.z;
        acc.w += c * y.w;
        reinterpret_cast<float4*>(values + j * a.dim)[d] = make_float4(c * x.x, c * x.y, c * x.z, c * x.w);
      }
      reinterpret_cast<float4*>(grad_u)[d] = acc;
    }
  } else {
    for (int d = lane; d < a.dim; d += kWarp) {
      const float x = u[d];
      float acc = 0.0f;
      for (int j = 0; j < a.cands; ++j) {
        const float c = coef[j] * scale;
        const int64_t row = checkedRow(candidate(a.candidates, a.cands, b, j), a.out_row_count, "context/negative");
        acc += c * a.out[row * a.dim + d];
        values[j * a.dim + d] = c * x;
      }
      grad_u[d] = acc;
    }
  }
}

__global__ void rowsAxpyKernel(RowsAxpyArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  if (i >= a.n) return;
  float* dst = a.table + checkedRow(a.idx[i], a.table_rows, "row") * a.dim;
  const float* src = a.rows + i * a.dim;
  for (int d = lane; d < a.dim; d += kWarp) atomicAdd(dst + d, a.alpha * src[d]);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// float4 access needs every row start 16-byte aligned: the bases, and a row stride that keeps them so.
bool canUseVec4(int dim, std::initializer_list<const void*> bases) {
  if (dim % 4 != 0) return false;
  for (const void* p : bases) {
    if (p != nullptr && !aligned16(p)) return false;
  }
  return true;
}

unsigned blocksFor(int64_t batch) {
  return static_cast<unsigned>((batch + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

const char* launched() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* launchSgnsScore(const SgnsScoreArgs& args, void* stream) {
  if (args.batch == 0) return nullptr;
  const auto s = static_cast<cudaStream_t>(stream);
  const unsigned blocks = blocksFor(args.batch);
  if (canUseVec4(args.dim, {args.query.u, args.out})) {
    scoreKernel<true><<<blocks, kWarp * kWarpsPerBlock, 0, s>>>(args);
  } else {
    scoreKernel<false><<<blocks, kWarp * kWarpsPerBlock, 0, s>>>(args);
  }
  return launched();
}

const char* launchSgnsBackward(const SgnsBackwardArgs& args, void* stream) {
  if (args.batch == 0) return nullptr;
  const auto s = static_cast<cudaStream_t>(stream);
  const unsigned blocks = blocksFor(args.batch);
  if (canUseVec4(args.dim, {args.query.u, args.out, args.grad_u, args.values})) {
    backwardKernel<true><<<blocks, kWarp * kWarpsPerBlock, 0, s>>>(args);
  } else {
    backwardKernel<false><<<blocks, kWarp * kWarpsPerBlock, 0, s>>>(args);
  }
  return launched();
}

const char* launchRowsAxpy(const RowsAxpyArgs& args, void* stream) {
  if (args.n == 0) return nullptr;
  rowsAxpyKernel<<<blocksFor(args.n), kWarp * kWarpsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(args);
  return launched();
}

}  // namespace ringtrain::model::detail
