// Row scatter-add for embedding tables. LibTorch 1.13's CPU index_add_ runs one TensorIterator kernel call per
// index (~0.1-1 us each); with 7k rows per step that was the optimizer's whole cost. On CPU float32
// contiguous tensors this is a plain loop (same order as index_add_, so equally deterministic); on CUDA float32
// contiguous tensors ringtrain's kernel where the build has it (src/model/sgns_device_kernels.cu); elsewhere it
// is index_add_.
#pragma once

#include <ATen/core/Tensor.h>

namespace ringtrain::model::detail {

// table[idx[i]] += alpha * rows[i] for every i; idx int64 [n], rows [n, ...] matching table's row shape.
void indexAddRows(at::Tensor& table, const at::Tensor& idx, const at::Tensor& rows, double alpha);

}  // namespace ringtrain::model::detail

namespace ringtrain::model::detail {

// Sums the duplicate rows of a sparse COO gradient over dim 0 (like Tensor::coalesce, whose 1.13 CPU version
// costs ~9 ms for 6k rows of a 100k-row table): rows sorted by index, duplicates added in their original
// order. Falls back to coalesce() for non-CPU or non-float32 tensors.
at::Tensor coalesceRows(const at::Tensor& sparse_grad);

}  // namespace ringtrain::model::detail
