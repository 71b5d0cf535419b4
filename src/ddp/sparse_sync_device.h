// The sparse-row synchronization for CUDA tables over NCCL, on the device: rows are coalesced, exchanged by
// ncclAllGather and summed where they live, instead of being staged through the host (sparse_sync.cc).
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/ddp/sparse_sync.h"

namespace ringtrain::ddp::detail {

// Whether the device path takes these: a communicator that moves device memory (NCCL) and CUDA tables.
bool sparseSyncOnDevice(const comm::Communicator& comm, const std::vector<at::Tensor>& params);

// Collective. Same contract as SparseRowSync::sync (grads undefined, sparse or dense; the averaged coalesced
// sparse gradient per table, on its device), whatever the sync mode: on NCCL the rows are all-gathered
// (ddp.sparse_sync: owner is not used there; SparseRowSync says so once).
// Each rank's rows are padded to the largest count of the table, so the exchange is one fixed-size
// allgather of ids and one of values per table; the counts themselves are all-gathered first and read on
// the host. Host reads per step: that one, and the row count of each coalesce (the local one per table, the
// merge per table); nothing else waits for the device.
// Memory: every rank receives world x (largest count) rows per table, so one rank with a dense gradient for
// a table makes every rank hold world copies of that table for the step.
// Works on any device whose communicator moves its memory; the unit tests run it on host tensors over Gloo.
std::vector<at::Tensor> syncSparseRowsOnDevice(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                               const std::vector<at::Tensor>& grads, SparseSyncCounts& counts);

}  // namespace ringtrain::ddp::detail
