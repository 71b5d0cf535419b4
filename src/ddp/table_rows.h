// The rows one rank contributes to a sparse-row sync for one table, whichever path moves them: the host
// exchange (sparse_sync.cc) or the device one (sparse_sync_device.cc).
#pragma once

#include <ATen/core/Tensor.h>

namespace ringtrain::ddp::detail {

// ids [n] int64 and values [n, width] (width = the table's row size, contiguous, the table's dtype) on
// `device`. An undefined gradient gives no rows; a dense one (e.g. the user replaced it) gives every row; a
// sparse one its lookups, duplicates kept unless `coalesce`. A gradient on a GPU is coalesced there first
// either way: fewer rows to move.
struct TableRows {
  at::Tensor ids;
  at::Tensor values;
};
TableRows tableRows(const at::Tensor& param, const at::Tensor& grad, const at::Device& device, bool coalesce);

// The table's row size: elements per row of dim 0.
int64_t rowWidth(const at::Tensor& param);

}  // namespace ringtrain::ddp::detail
