#include "ringtrain/ddp/sparse_sync.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include <ATen/ATen.h>

#include "ringtrain/core/error.h"

namespace ringtrain::ddp {
namespace {

struct Rows {
  at::Tensor rows;    // int64 [k], CPU
  at::Tensor values;  // [k, width...], CPU contiguous
};

// Sums rows that share an id: returns the ids ascending, each once, and their summed values. Rows with equal
// ids add in input order (a stable sort), so every rank that sums the same concatenation gets the same
// bits. LibTorch 1.13's CPU coalesce() costs ~9 ms on a batch's worth of rows; this costs well under one.
std::pair<at::Tensor, at::Tensor> sumDuplicateRows(at::Tensor rows, at::Tensor values) {
  rows = rows.to(at::kCPU).contiguous();
  values = values.contiguous();
  const int64_t n = rows.numel();
  if (!values.is_cpu() || values.scalar_type() != at::kFloat) {
    at::Tensor summed = at::sparse_coo_tensor(rows.to(values.device()).unsqueeze(0), values).coalesce();
    return {summed.indices().select(0, 0).to(at::kCPU).contiguous(), summed.values().contiguous()};
  }
  const int64_t width = n > 0 ? values.numel() / n : 0;
  const int64_t* ids = rows.data_ptr<int64_t>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [ids](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  int64_t unique = 0;
  for (int64_t i = 0; i < n; ++i) unique += (i == 0 || ids[order[i]] != ids[order[i - 1]]) ? 1 : 0;
  std::vector<int64_t> value_shape(values.sizes().begin(), values.sizes().end());
  value_shape[0] = unique;
  at::Tensor out_rows = at::empty({unique}, at::kLong);
  at::Tensor out_values = at::zeros(value_shape, values.options());
  int64_t* out_ids = out_rows.data_ptr<int64_t>();
  float* out = out_values.data_ptr<float>();
  const float* in = values.data_ptr<float>();
  int64_t slot = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t src = order[i];
    if (i == 0 || ids[src] != ids[order[i - 1]]) out_ids[++slot] = ids[src];
    float* dst = out + slot * width;
    const float* row = in + src * width;
    for (int64_t j = 0; j < width; ++j) dst[j] += row[j];
  }
  return {out_rows, out_values};
}

Rows localRows(const at::Tensor& param, const at::Tensor& grad) {
  std::vector<int64_t> value_shape(param.sizes().begin(), param.sizes().end());
  value_shape[0] = 0;
  if (!grad.defined()) {
    return {at::empty({0}, at::kLong), at::empty(value_shape, param.options().device(at::kCPU))};
  }
  if (!grad.is_sparse()) {
    // A dense gradient (e.g. the user replaced it): every row counts.
    at::Tensor dense = grad.to(at::kCPU).contiguous();
    return {at::arange(param.size(0), at::kLong), dense};
  }
  if (grad.is_coalesced()) {
    return {grad.indices().select(0, 0).to(at::kCPU).contiguous(), grad.values().to(at::kCPU).contiguous()};
  }
  auto [rows, values] = sumDuplicateRows(grad._indices().select(0, 0), grad._values());
  return {rows, values.to(at::kCPU)};
}

// Builds the averaged, coalesced result from concatenated rows.
at::Tensor assemble(const at::Tensor& param, std::vector<at::Tensor>& rows, std::vector<at::Tensor>& values,
                    int world) {
  auto [summed_rows, summed_values] = sumDuplicateRows(at::cat(rows), at::cat(values));
  at::Tensor averaged = summed_values;
  if (world > 1) averaged = averaged.div(static_cast<double>(world));
  at::Tensor result = at::sparse_coo_tensor(summed_rows.unsqueeze(0), averaged, param.sizes());
  result._coalesced_(true);
  return result.to(param.device());
}

}  // namespace

void appendRows(std::vector<uint8_t>& out, const at::Tensor& rows, const at::Tensor& values) {
  const int64_t count = rows.numel();
  const int64_t width = count > 0 ? values.numel() / count : 0;
  const size_t value_bytes = static_cast<size_t>(values.numel()) * values.element_size();
  const size_t start = out.size();
  out.resize(start + 2 * sizeof(int64_t) + count * sizeof(int64_t) + value_bytes);
  uint8_t* dst = out.data() + start;
  std::memcpy(dst, &count, sizeof(int64_t));
  std::memcpy(dst + sizeof(int64_t), &width, sizeof(int64_t));
  if (count > 0) {
    std::memcpy(dst + 2 * sizeof(int64_t), rows.data_ptr<int64_t>(), count * sizeof(int64_t));
    std::memcpy(dst + (2 + count) * sizeof(int64_t), values.data_ptr(), value_bytes);
  }
}

std::vector<uint8_t> packRows(const at::Tensor& rows, const at::Tensor& values) {
  std::vector<uint8_t> out;
  appendRows(out, rows, values);
  return out;
}

size_t unpackRowsFrom(const uint8_t* bytes, size_t size, c10::ScalarType dtype, std::vector<at::Tensor>& rows,
                      std::vector<at::Tensor>& values) {
  RT_CHECK_GE(size, 2 * sizeof(int64_t), "sparse rows message too short");
  int64_t count = 0, width = 0;
  std::memcpy(&count, bytes, sizeof(int64_t));
  std::memcpy(&width, bytes + sizeof(int64_t), sizeof(int64_t));
  RT_CHECK(count >= 0 && width >= 0, "sparse rows message has a negative count or width");
  const size_t element = c10::elementSize(dtype);
  const size_t consumed = (2 + count) * sizeof(int64_t) + count * width * element;
  RT_CHECK_LE(consumed, size, "sparse rows message is shorter than its header says");
  if (count == 0) return consumed;
  at::Tensor r = at::empty({count}, at::kLong);
  std::memcpy(r.data_ptr<int64_t>(), bytes + 2 * sizeof(int64_t), count * sizeof(int64_t));
  at::Tensor v = at::empty({count, width}, at::TensorOptions().dtype(dtype));
  std::memcpy(v.data_ptr(), bytes + (2 + count) * sizeof(int64_t), count * width * element);
  rows.push_back(r);
  values.push_back(v);
  return consumed;
}

void unpackRows(const std::vector<uint8_t>& bytes, c10::ScalarType dtype, std::vector<at::Tensor>& rows,
                std::vector<at::Tensor>& values) {
  const size_t consumed = unpackRowsFrom(bytes.data(), bytes.size(), dtype, rows, values);
  RT_CHECK_EQ(consumed, bytes.size(), "sparse rows message has the wrong length");
}

namespace {

// One table's rows, gathered from every rank (rank order), ready for assemble().
struct Gathered {
  std::vector<at::Tensor> rows;
  std::vector<at::Tensor> values;
};

Gathered seeded(int64_t width, c10::ScalarType dtype) {
  // Seeds the concatenation with an empty block so at::cat always has an input of the right shape.
  Gathered g;
  g.rows.push_back(at::empty({0}, at::kLong));
  g.values.push_back(at::empty({0, width}, at::TensorOptions().dtype(dtype)));
  return g;
}

int64_t rowWidth(const at::Tensor& param) { return param.numel() / std::max<int64_t>(param.size(0), 1); }

Rows flatLocalRows(const at::Tensor& param, const at::Tensor& grad, SparseSyncCounts& counts) {
  Rows local = localRows(param, grad);
  local.values = local.values.reshape({local.rows.numel(), rowWidth(param)});
  counts.rows_local += static_cast<size_t>(local.rows.numel());
  return local;
}

// All-gathers one block of rows per table, every table in one message per rank ([table 0][table 1]...,
// each block self-delimiting), and appends every rank's blocks, in rank order, to out[t].
void allgatherRows(comm::Communicator& comm, const std::vector<Rows>& blocks, std::vector<Gathered>& out,
                   SparseSyncCounts& counts) {
  std::vector<uint8_t> mine;
  for (const Rows& b : blocks) appendRows(mine, b.rows, b.values);
  auto all = comm.allgatherBytes(mine);
  counts.bytes_sent += mine.size() * static_cast<size_t>(comm.size() - 1);
  for (int r = 0; r < comm.size(); ++r) {
    if (r != comm.rank()) counts.bytes_received += all[r].size();
    size_t offset = 0;
    for (size_t t = 0; t < blocks.size(); ++t) {
      offset += unpackRowsFrom(all[r].data() + offset, all[r].size() - offset, blocks[t].values.scalar_type(),
                               out[t].rows, out[t].values);
    }
    RT_CHECK_EQ(offset, all[r].size(), "sparse rows message from rank ", r, " has the wrong length");
  }
}

// Owner mode, first phase for one table: rows to their owners (allToAllBytes); returns the rows this rank
// owns, summed over ranks in rank order.
Rows reduceAtOwner(comm::Communicator& comm, const at::Tensor& param, const Rows& local, SparseSyncCounts& counts) {
  const int world = comm.size();
  const int me = comm.rank();
  const c10::ScalarType dtype = param.scalar_type();
  // Rows are sorted (coalesced), so each owner's share stays sorted.
  at::Tensor owner = local.rows.remainder(world);
  std::vector<std::vector<uint8_t>> send(world);
  for (int o = 0; o < world; ++o) {
    at::Tensor mask = owner.eq(o);
    at::Tensor picked_rows = local.rows.masked_select(mask);
    at::Tensor picked_values = local.values.index({mask}).contiguous();
    send[o] = packRows(picked_rows, picked_values);
    if (o != me) counts.bytes_sent += send[o].size();
  }
  auto received = comm.allToAllBytes(send);
  Gathered own = seeded(rowWidth(param), dtype);
  for (int r = 0; r < world; ++r) {
    if (r != me) counts.bytes_received += received[r].size();
    unpackRows(received[r], dtype, own.rows, own.values);
  }
  auto [rows, values] = sumDuplicateRows(at::cat(own.rows), at::cat(own.values));
  return {rows, values};
}

at::Tensor finish(const at::Tensor& param, Gathered& g, int world, SparseSyncCounts& counts) {
  std::vector<at::Tensor> shaped;
  for (auto& v : g.values) {
    std::vector<int64_t> shape(param.sizes().begin(), param.sizes().end());
    shape[0] = v.size(0);
    shaped.push_back(v.reshape(shape));
  }
  at::Tensor result = assemble(param, g.rows, shaped, world);
  counts.rows_global += static_cast<size_t>(result._nnz());
  return result;
}

}  // namespace

std::vector<at::Tensor> syncSparseGradients(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                            const std::vector<at::Tensor>& grads, SparseSync mode,
                                            SparseSyncCounts& counts) {
  RT_CHECK_EQ(params.size(), grads.size(), "syncSparseGradients: one gradient per parameter");
  const int world = comm.size();
  std::vector<Rows> local;
  std::vector<Gathered> gathered;
  for (size_t t = 0; t < params.size(); ++t) {
    local.push_back(flatLocalRows(params[t], grads[t], counts));
    gathered.push_back(seeded(rowWidth(params[t]), params[t].scalar_type()));
  }

  if (world == 1) {
    for (size_t t = 0; t < params.size(); ++t) {
      gathered[t].rows.push_back(local[t].rows);
      gathered[t].values.push_back(local[t].values);
    }
  } else if (mode == SparseSync::kAllgather) {
    allgatherRows(comm, local, gathered, counts);
  } else {
    // Each table's rows are reduced at their owners, then every owner's rows of all tables in one gather.
    std::vector<Rows> reduced;
    for (size_t t = 0; t < params.size(); ++t) reduced.push_back(reduceAtOwner(comm, params[t], local[t], counts));
    allgatherRows(comm, reduced, gathered, counts);
  }

  std::vector<at::Tensor> results;
  for (size_t t = 0; t < params.size(); ++t) results.push_back(finish(params[t], gathered[t], world, counts));
  return results;
}

at::Tensor syncSparseGradient(comm::Communicator& comm, const at::Tensor& param, const at::Tensor& grad,
                              SparseSync mode, SparseSyncCounts& counts) {
  return syncSparseGradients(comm, {param}, {grad}, mode, counts).front();
}

}  // namespace ringtrain::ddp
