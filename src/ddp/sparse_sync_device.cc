#include "ddp/sparse_sync_device.h"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include <ATen/ATen.h>

#include "ddp/table_rows.h"
#include "ringtrain/core/error.h"
#include "ringtrain/ddp/tensor_buffer.h"

namespace ringtrain::ddp::detail {
namespace {

// The communicator's errors name the rank, the collective and the cause; a timeout stays a TimeoutError.
// After a failed wait NCCL may still read `send` and write `recv`: they are kept for the life of the process
// instead of going back to LibTorch's allocator, where the next tensor would get their memory.
void allgather(comm::Communicator& comm, const at::Tensor& send, const at::Tensor& recv) {
  try {
    comm.allgatherAsync(asBuffer(send), asBuffer(recv))->wait(comm.timeout());
  } catch (...) {
    static std::mutex mu;
    static std::vector<at::Tensor>* abandoned = new std::vector<at::Tensor>();  // never freed, on purpose
    std::lock_guard<std::mutex> lock(mu);
    abandoned->push_back(send);
    abandoned->push_back(recv);
    throw;
  }
}

}  // namespace

bool sparseSyncOnDevice(const comm::Communicator& comm, const std::vector<at::Tensor>& params) {
  if (comm.backendName() != "nccl" || params.empty()) return false;
  return std::all_of(params.begin(), params.end(), [](const at::Tensor& p) { return p.is_cuda(); });
}

std::vector<at::Tensor> syncSparseRowsOnDevice(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                               const std::vector<at::Tensor>& grads, SparseSyncCounts& counts) {
  RT_CHECK_EQ(params.size(), grads.size(), "sparse row sync: one gradient per parameter");
  const int world = comm.size();
  const int64_t tables = static_cast<int64_t>(params.size());
  std::vector<TableRows> local;  // coalesced, on the table's device
  std::vector<int64_t> mine;
  for (int64_t t = 0; t < tables; ++t) {
    local.push_back(tableRows(params[t], grads[t], params[t].device(), /*coalesce=*/true));
    mine.push_back(local.back().ids.numel());
    counts.rows_local += static_cast<size_t>(mine.back());
  }
  // Every rank's row count per table: [world, tables], read on the host.
  const auto device_long = at::TensorOptions().dtype(at::kLong).device(params[0].device());
  const at::Tensor my_counts = at::tensor(mine, at::kLong).to(device_long);
  const at::Tensor all_counts = at::empty({world, tables}, device_long);
  allgather(comm, my_counts, all_counts);
  const at::Tensor host_counts = all_counts.cpu();
  const int64_t* count_of = host_counts.data_ptr<int64_t>();  // count_of[r * tables + t]

  std::vector<at::Tensor> results;
  for (int64_t t = 0; t < tables; ++t) {
    const at::Tensor& param = params[t];
    int64_t padded = 0;
    for (int r = 0; r < world; ++r) padded = std::max(padded, count_of[r * tables + t]);
    const int64_t width = rowWidth(param);
    // Padding rows are never read back: each rank's first count_of[r][t] rows are taken below.
    at::Tensor send_ids = at::zeros({padded}, device_long);
    at::Tensor send_values = at::zeros({padded, width}, param.options());
    const int64_t n = local[t].ids.numel();
    if (n > 0) {
      send_ids.narrow(0, 0, n).copy_(local[t].ids);
      send_values.narrow(0, 0, n).copy_(local[t].values);
    }
    const at::Tensor recv_ids = at::empty({padded * world}, device_long);
    const at::Tensor recv_values = at::empty({padded * world, width}, param.options());
    if (padded > 0) {
      allgather(comm, send_ids, recv_ids);
      allgather(comm, send_values, recv_values);
    }
    const size_t bytes = static_cast<size_t>(send_ids.nbytes() + send_values.nbytes());
    counts.bytes_sent += bytes * static_cast<size_t>(world - 1);
    counts.bytes_received += bytes * static_cast<size_t>(world - 1);

    std::vector<at::Tensor> ids, values;
    for (int r = 0; r < world; ++r) {
      const int64_t c = count_of[r * tables + t];
      ids.push_back(recv_ids.narrow(0, r * padded, c));
      values.push_back(recv_values.narrow(0, r * padded, c));
    }
    // Duplicates across ranks add up in coalesce(), the same on every rank (same input, same order).
    const at::Tensor all_ids = at::cat(ids);
    std::vector<int64_t> shape(param.sizes().begin(), param.sizes().end());
    shape[0] = all_ids.numel();
    at::Tensor summed =
        at::sparse_coo_tensor(all_ids.unsqueeze(0), at::cat(values).reshape(shape), param.sizes()).coalesce();
    at::Tensor averaged = at::_sparse_coo_tensor_unsafe(summed._indices(), summed._values().div(world),
                                                        param.sizes(), summed.options());
    averaged._coalesced_(true);
    counts.rows_global += static_cast<size_t>(averaged._nnz());
    results.push_back(averaged);
  }
  return results;
}

}  // namespace ringtrain::ddp::detail
