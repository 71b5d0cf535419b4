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
// undefined. context: int64 [B]; negatives: int64 [B, K]. Returns {loss (0-dim), coef [B, K + 1]}: see
// SgnsScoreArgs.
std::pair<at::Tensor, at::Tensor> sgnsDeviceScore(const at::Tensor& u_source, const at::Tensor& u_rows,
                                                  const at::Tensor& out_w, const at::Tensor& context,
                                                  const at::Tensor& negatives);

// The output table's gradient rows and their ids, and the query vectors' gradient.
struct SgnsDeviceGrads {
  at::Tensor grad_u;      // [B, D]
  at::Tensor out_values;  // [B * (K + 1), D]
  at::Tensor out_ids;     // [B * (K + 1)] int64
};

// Scaled by grad_output (the loss's gradient, one element).
SgnsDeviceGrads sgnsDeviceBackward(const at::Tensor& coef, const at::Tensor& u_source, const at::Tensor& u_rows,
                                   const at::Tensor& out_w, const at::Tensor& context, const at::Tensor& negatives,
                                   const at::Tensor& grad_output);

// table[idx[i]] += alpha * rows[i] on the device (see RowsAxpyArgs): for contiguous float32 CUDA tables
// (deviceKernelsApply(rows, table)) and int64 ids on the same device.
void deviceRowsAxpy(at::Tensor& table, const at::Tensor& idx, const at::Tensor& rows, double alpha);

}  // namespace ringtrain::model::detail
