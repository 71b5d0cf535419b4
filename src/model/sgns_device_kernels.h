// The SGNS step's hand-written CUDA kernels, behind a plain C++ interface (no LibTorch, no CUDA headers), so
// that nvcc compiles them apart from LibTorch's headers. src/model/sgns_device_ops.cc is the LibTorch side.
//
// Why: on a GPU the ATen formulation of a step (gather, bmm, log_sigmoid, sum, sigmoid, mul, ...) is ~25 kernel
// launches, each a few microseconds of host time, for ~30 MB of memory traffic that the card moves in ~10 us.
// The score kernel and the backward kernel below each make one pass over the rows a batch touches.
#pragma once

#include <cstdint>

namespace ringtrain::model::detail {

// The rows an example's query vector u comes from: row u_rows[b] of `u` ([u_row_count, dim]), or row b when
// u_rows is null (a dense [batch, dim] input, e.g. the tower's output).
struct SgnsQueryRows {
  const float* u = nullptr;
  const int64_t* u_rows = nullptr;
  int64_t u_row_count = 0;
};

// The candidates of example b: j = 0 its context[b], j = 1..K its negatives[b, j - 1] (K = cands - 1). They
// are read where the loader put them, so no [B, K + 1] id table is built.
struct SgnsCandidates {
  const int64_t* context = nullptr;    // [batch]
  const int64_t* negatives = nullptr;  // [batch, cands - 1]
};

// What both kernels read: the batch's query rows, the output table and each example's candidates.
struct SgnsLookup {
  SgnsQueryRows query;
  const float* out = nullptr;  // [out_row_count, dim]
  int64_t out_row_count = 0;
  SgnsCandidates candidates;
  int64_t batch = 0;
  int cands = 0;
  int dim = 0;
};

// For every example b and candidate j, with s = <u_b, out[candidate j]> and sign = +1 for j = 0, -1 otherwise:
//   coef[b, j]   = d loss / d s = -sign * sigmoid(-sign * s) / batch
//   loss_rows[b] = -sum_j log sigmoid(sign * s) / batch
struct SgnsScoreArgs : SgnsLookup {
  float* coef = nullptr;       // [batch, cands]
  float* loss_rows = nullptr;  // [batch]
};

// With c = coef[b, j] * grad_output[0] and id = candidate j of example b:
//   grad_u[b]              = sum_j c * out[id]
//   values[b * cands + j]  = c * u_b            (the output table's gradient row for that lookup)
//   out_ids[b * cands + j] = id                 (its row id)
struct SgnsBackwardArgs : SgnsLookup {
  const float* coef = nullptr;
  const float* grad_output = nullptr;  // one float on the device: the scalar loss's gradient
  float* grad_u = nullptr;             // [batch, dim]
  float* values = nullptr;             // [batch * cands, dim]
  int64_t* out_ids = nullptr;          // [batch * cands]
};

// table[idx[i]] += alpha * rows[i] for i < n: the sparse SGD update (and a dense gradient's assembly) of an
// embedding table; duplicate ids add up (atomically, in no fixed order, as ATen's index_add_ on CUDA).
struct RowsAxpyArgs {
  float* table = nullptr;  // [table_rows, dim]
  int64_t table_rows = 0;
  int dim = 0;
  const int64_t* idx = nullptr;  // [n]
  const float* rows = nullptr;   // [n, dim]
  int64_t n = 0;
  float alpha = 1.0f;
};

// Launch on `stream` (a cudaStream_t) of the current device. Return nullptr, or CUDA's message for a failed
// launch. An id outside its table stops the kernel with a device-side trap (printed first), as ATen's own
// gather kernels do: the check costs nothing on the host and no round trip.
const char* launchSgnsScore(const SgnsScoreArgs& args, void* stream);
const char* launchSgnsBackward(const SgnsBackwardArgs& args, void* stream);
const char* launchRowsAxpy(const RowsAxpyArgs& args, void* stream);

}  // namespace ringtrain::model::detail
