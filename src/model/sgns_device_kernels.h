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

// For every example b and candidate j (j = 0 the context, j >= 1 the negatives), with
// s = <u_b, out[ids[b, j]]> and sign = +1 for j = 0, -1 otherwise:
//   coef[b, j]   = d loss / d s = -sign * sigmoid(-sign * s) / batch
//   loss_rows[b] = -sum_j log sigmoid(sign * s) / batch
struct SgnsScoreArgs {
  SgnsQueryRows query;
  const float* out = nullptr;  // [out_row_count, dim]
  int64_t out_row_count = 0;
  const int64_t* ids = nullptr;  // [batch, cands]
  int64_t batch = 0;
  int cands = 0;
  int dim = 0;
  float* coef = nullptr;       // [batch, cands]
  float* loss_rows = nullptr;  // [batch]
};

// With c = coef[b, j] * grad_output[0]:
//   grad_u[b]           = sum_j c * out[ids[b, j]]
//   values[b * cands + j] = c * u_b            (the output table's gradient row for that lookup)
struct SgnsBackwardArgs {
  SgnsQueryRows query;
  const float* out = nullptr;
  int64_t out_row_count = 0;
  const int64_t* ids = nullptr;
  int64_t batch = 0;
  int cands = 0;
  int dim = 0;
  const float* coef = nullptr;
  const float* grad_output = nullptr;  // one float on the device: the scalar loss's gradient
  float* grad_u = nullptr;             // [batch, dim]
  float* values = nullptr;             // [batch * cands, dim]
};

// Launch on `stream` (a cudaStream_t) of the current device. Return nullptr, or CUDA's message for a failed
// launch. An id outside its table stops the kernel with a device-side trap (printed first), as ATen's own
// gather kernels do: the check costs nothing on the host and no round trip.
const char* launchSgnsScore(const SgnsScoreArgs& args, void* stream);
const char* launchSgnsBackward(const SgnsBackwardArgs& args, void* stream);

}  // namespace ringtrain::model::detail
