// Synchronization of sparse row gradients (Embedding/EmbeddingBag with sparse(true)). Only touched rows
// travel, as host bytes through Communicator::allgatherBytes / allToAllBytes, over every backend; CUDA
// tables over NCCL are all-gathered and summed on the device instead (src/ddp/sparse_sync_device.h).
//
// allgather and owner return the same value, bit for bit (each sums a row's values in rank order): a
// coalesced sparse COO tensor holding, for every row touched on any rank, the sum over ranks divided by the
// world size. It is identical on every rank (every rank coalesces the same bytes in the same order).
//  allgather: each rank coalesces its rows, all-gathers (row ids, values) and sums them by id, in rank
//             order. Each rank receives every other rank's rows: ~ (world - 1) x rows.
//  owner:     row r belongs to rank r % world. Each rank coalesces locally (hot rows travel once), sends each
//             owner its rows (allToAllBytes); owners sum what they receive (in rank order) and all-gather
//             their reduced rows. A rank sends its distinct rows plus its share of the union and receives
//             the union of distinct rows: the traffic follows distinct touched rows, not ranks x rows.
//  shared:    owner mode without the final gather: the result holds only the rows this rank owns (summed
//             over ranks, divided by the world size). It is the whole update only for tables every rank
//             maps from one copy (DistributedDataParallel sets that up), where each owner's optimizer
//             writes its rows for all. A rank sends its distinct rows and receives its owned share: its
//             traffic follows the rows it touched, not ranks x rows (reference workload, bytes sent per
//             rank and step: 0.63, 0.95 and 1.1 MB at 2, 4 and 8 ranks, against 1.3, 3.9 and 9.0 MB
//             all-gathered). syncSparseGradients() refuses it: only DistributedDataParallel shares tables.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/ddp/distributed_data_parallel.h"

namespace ringtrain::ddp {

struct SparseSyncCounts {
  size_t bytes_sent = 0;      // payload bytes this rank shipped to other ranks
  size_t bytes_received = 0;  // payload bytes it received from other ranks
  size_t rows_local = 0;      // distinct rows this rank touched
  size_t rows_global = 0;     // distinct rows in the result (shared: the rows this rank owns)
  // Time inside the host path's byte exchange (the collective, waiting for the last rank included); the
  // rest of a sync is this rank's own summing and packing. The device path (CUDA tables over NCCL) leaves
  // it at zero.
  std::chrono::nanoseconds exchange_time{0};
  // Time the helper thread spent summing this rank's rows into the owners' messages (owner and shared
  // modes, tables handed over by SparseRowSync::prepare()), while backward ran: work taken off the sync.
  std::chrono::nanoseconds overlapped_time{0};
  // Tables whose rows sync() took as prepare() had summed them (not summed again at sync()).
  size_t tables_overlapped = 0;
};

inline int ownerOfRow(int64_t row, int world) { return static_cast<int>(row % world); }

// The synchronizer DistributedDataParallel keeps for its sparse parameters. It holds scratch between steps
// (per table a bit and a slot per row, for summing rows by id without sorting; the exchange buffers), so an
// allgather-mode step over same-host copies neither sorts nor allocates beyond its result. One per
// parameter list: call sync() with the same parameters, in the same order, every time.
//
// Rows travel as one message per rank, [table 0][table 1]..., each table's block being
// [int64 count][int64 width][count int64 row ids, ascending, distinct][count x width values], zero-padded
// to a multiple of 8 bytes (the reader requires the padded length).
class SparseRowSync {
 public:
  explicit SparseRowSync(SparseSync mode);
  ~SparseRowSync();
  SparseRowSync(const SparseRowSync&) = delete;
  SparseRowSync& operator=(const SparseRowSync&) = delete;

  // Owner and shared modes, host tables: hands table `index`'s gradient, ready before the others' (its part
  // of backward is done), to a helper thread, which sums this rank's rows of it into the owners' messages
  // while the rest of backward runs. Tables go into the messages in index order, so a table waits for those
  // before it. Returns false, doing nothing, where sync() must do it all (other modes, world size 1, a dense
  // or GPU gradient). The gradient is read now and on the helper: do not write into its values before
  // sync(). sync() sums every table again if a table's gradient is another tensor by then, or the same one
  // changed (its version moved: another backward accumulated into it).
  // Not thread-safe against sync(): call it between backward's start and sync(), as DDP's gradient hooks do.
  bool prepare(comm::Communicator& comm, const std::vector<at::Tensor>& params, size_t index,
               const at::Tensor& grad);

  // Collective. grads[i] belongs to params[i]; each may be undefined (no row touched here), sparse, or dense
  // (then every row counts as touched). Returns, per parameter, the averaged coalesced sparse gradient on
  // the parameter's device; adds to `counts`. It first waits for the tables prepare() handed over.
  std::vector<at::Tensor> sync(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                               const std::vector<at::Tensor>& grads, SparseSyncCounts& counts);

 private:
  struct State;
  SparseSync mode_;
  std::unique_ptr<State> state_;
};

// Collective. `grad` may be undefined (no row touched here), sparse, or dense (then every row counts as
// touched). Returns the averaged coalesced sparse gradient on `param`'s device; adds to `counts`.
at::Tensor syncSparseGradient(comm::Communicator& comm, const at::Tensor& param, const at::Tensor& grad,
                              SparseSync mode, SparseSyncCounts& counts);

// Several parameters at once (grads[i] belongs to params[i]) through a SparseRowSync made for the call;
// returns their results in order. In allgather mode every table travels in one message per rank: one
// exchange per step instead of one per table, which is what a step pays for on a busy machine (each
// exchange costs a round of thread wake-ups on every rank). Owner and shared modes likewise send every
// table's rows to their owners in one exchange (and owner mode gathers the reduced rows in one more).
std::vector<at::Tensor> syncSparseGradients(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                            const std::vector<at::Tensor>& grads, SparseSync mode,
                                            SparseSyncCounts& counts);

}  // namespace ringtrain::ddp
