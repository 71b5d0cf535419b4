// Synchronization of sparse row gradients (Embedding/EmbeddingBag with sparse(true)). Only touched rows
// travel, as host bytes through Communicator::allgatherBytes / allToAllBytes, so it works over every
// backend (NCCL included: CUDA rows are staged through the host).
//
// Both modes return the same value (up to float summation order): a coalesced sparse COO tensor holding,
// for every row touched on any rank, the sum over ranks divided by the world size. It is identical on every
// rank (every rank coalesces the same bytes in the same order).
//  allgather: each rank coalesces its rows, all-gathers (row ids, values), concatenates in rank order,
//             coalesces. Each rank receives every other rank's rows: ~ (world - 1) x rows.
//  owner:     row r belongs to rank r % world. Each rank coalesces locally (hot rows travel once), sends each
//             owner its rows (allToAllBytes); owners sum what they receive (in rank order) and all-gather
//             their reduced rows. A rank sends its distinct rows plus its share of the union and receives
//             the union of distinct rows: the traffic follows distinct touched rows, not ranks x rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/ddp/distributed_data_parallel.h"

namespace ringtrain::ddp {

struct SparseSyncCounts {
  size_t bytes_sent = 0;      // payload bytes this rank shipped to other ranks
  size_t bytes_received = 0;  // payload bytes it received from other ranks
  size_t rows_local = 0;      // distinct rows this rank touched
  size_t rows_global = 0;     // distinct rows in the result
};

inline int ownerOfRow(int64_t row, int world) { return static_cast<int>(row % world); }

// Serialized rows: [int64 count][int64 width][count int64 row ids][count x width values, raw].
std::vector<uint8_t> packRows(const at::Tensor& rows, const at::Tensor& values);
// The same block appended to `out` (several tables travel in one message as consecutive blocks).
void appendRows(std::vector<uint8_t>& out, const at::Tensor& rows, const at::Tensor& values);
// Appends the rows and values of the block at `bytes` (values of `dtype`) to the lists; returns the
// block's length. Throws when the block claims more than `size` bytes.
size_t unpackRowsFrom(const uint8_t* bytes, size_t size, c10::ScalarType dtype, std::vector<at::Tensor>& rows,
                      std::vector<at::Tensor>& values);
// unpackRowsFrom over a whole message that must hold exactly one block.
void unpackRows(const std::vector<uint8_t>& bytes, c10::ScalarType dtype, std::vector<at::Tensor>& rows,
                std::vector<at::Tensor>& values);

// Collective. `grad` may be undefined (no row touched here), sparse, or dense (then every row counts as
// touched). Returns the averaged coalesced sparse gradient on `param`'s device; adds to `counts`.
at::Tensor syncSparseGradient(comm::Communicator& comm, const at::Tensor& param, const at::Tensor& grad,
                              SparseSync mode, SparseSyncCounts& counts);

// Several parameters at once (grads[i] belongs to params[i]); returns their results in order. In
// allgather mode every table travels in one message per rank: one exchange per step instead of one per
// table, which is what a step pays for on a busy machine (each exchange costs a round of thread wake-ups
// on every rank). Owner mode sends each table's rows to their owners separately, then gathers the owners'
// reduced rows of every table in one exchange.
std::vector<at::Tensor> syncSparseGradients(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                            const std::vector<at::Tensor>& grads, SparseSync mode,
                                            SparseSyncCounts& counts);

}  // namespace ringtrain::ddp
