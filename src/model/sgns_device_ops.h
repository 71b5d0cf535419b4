// The SGNS step on a CUDA device through ringtrain's own kernels (src/model/sgns_device_kernels.cu): the
// LibTorch side, which checks the tensors, allocates the outputs and launches on LibTorch's current stream
// of the tables' device. Compiled only where LibTorch has CUDA and a CUDA compiler was found
// (RINGTRAIN_HAVE_CUDA_KERNELS); SgnsModel falls back to ATen ops otherwise.
#pragma once

#include <utility>

#include <ATen/core/Tensor.h>

namespace ringtrain::model::detail {

// Whether the kernels take these tensors: CUDA, float32, contiguous, on one device.
bool deviceKernelsApply(const at::Tensor& u_source, const at::Tensor& out_w);

// The query vectors are rows `u_rows` of `u_source` (int64 [B]), or all of `u_source` ([B, D]) when u_rows is
// undefined. ids: int64 [B, C], column 0 the context. Returns {loss (0-dim), coef [B, C]}: see
// SgnsScoreArgs.
std::pair<at::Tensor, at::Tensor> sgnsDeviceScore(const at::Tensor& u_source, const at::Tensor& u_rows,
                                                  const at::Tensor& out_w, const at::Tensor& ids);

// Returns {grad_u [B, D], out_values [B * C, D]}, scaled by grad_output (the loss's gradient, one element).
std::pair<at::Tensor, at::Tensor> sgnsDeviceBackward(const at::Tensor& coef, const at::Tensor& u_source,
                                                     const at::Tensor& u_rows, const at::Tensor& out_w,
                                                     const at::Tensor& ids, const at::Tensor& grad_output);

}  // namespace ringtrain::model::detail
