#include "ringtrain/model/sgns_model.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include "core/prefetch.h"
#include "model/cpu_gemm.h"
#include "model/row_ops.h"
#include "model/table_memory.h"
#include "ringtrain/build_config.h"
#include "ringtrain/core/error.h"
#if RINGTRAIN_HAVE_CUDA_KERNELS
#include "model/sgns_device_ops.h"
#endif

namespace ringtrain::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Stash = c10::intrusive_ptr<torch::CustomClassHolder>;  // a SparseGradientStash, kept alive by the graph

// log(sigmoid(x)) without overflow.
inline float logSigmoid(float x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
inline float sigmoid(float x) {
  if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

// Eight independent partial sums, so the compiler vectorises the reduction without -ffast-math.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[d + j] * b[d + j];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

bool useCpuKernels(const at::Tensor& t) { return t.is_cpu() && t.scalar_type() == at::kFloat; }

// The score kernels below visit the output table's rows in the batch's random order: each example first
// asks for the rows of the example kExamplesAhead later (core/prefetch.h).
constexpr int64_t kExamplesAhead = 2;
inline void prefetchCandidates(const float* table, const int64_t* ids, int64_t count, int64_t dim) {
  for (int64_t j = 0; j < count; ++j) ::ringtrain::detail::prefetchRow(table, ids[j], dim);
}

// The positive and negative ids of each example as one [B, K+1] table: column 0 the context.
at::Tensor candidateIds(const at::Tensor& context, const at::Tensor& negatives) {
  return at::cat({context.unsqueeze(1), negatives}, 1).contiguous();
}

// rows of `table` at `ids` (any shape), contiguous [numel(ids), D]. The ids were range-checked (checkIds).
at::Tensor gatherRows(const at::Tensor& table, const at::Tensor& ids) {
  const at::Tensor flat = ids.reshape({-1});
  if (!useCpuKernels(table) || !table.is_contiguous() || table.dim() != 2 || !flat.is_cpu()) {
    return table.index_select(0, flat);  // (ids on another device than the table: ATen's error, not a crash)
  }
  const at::Tensor index = flat.contiguous();
  const int64_t n = index.numel(), dim = table.size(1);
  at::Tensor rows = at::empty({n, dim}, table.options());
  const int64_t* pi = index.data_ptr<int64_t>();
  const float* pt = table.data_ptr<float>();
  float* pr = rows.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    if (i + ::ringtrain::detail::kRowsAhead < n) {
      ::ringtrain::detail::prefetchRow(pt, pi[i + ::ringtrain::detail::kRowsAhead], dim);
    }
    std::copy_n(pt + pi[i] * dim, dim, pr + i * dim);
  }
  return rows;
}

void addBiasRows(at::Tensor& x, const at::Tensor& bias) {
  if (!useCpuKernels(x)) {
    x.add_(bias);
    return;
  }
  const int64_t rows = x.size(0), cols = x.size(1);
  float* px = x.data_ptr<float>();
  const float* pb = bias.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = px + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += pb[c];
  }
}

at::Tensor columnSums(const at::Tensor& x) {
  if (!useCpuKernels(x)) return x.sum(0);
  const int64_t rows = x.size(0), cols = x.size(1);
  at::Tensor out = at::zeros({cols}, x.options());
  float* po = out.data_ptr<float>();
  const float* px = x.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = px + r * cols;
    for (int64_t c = 0; c < cols; ++c) po[c] += row[c];
  }
  return out;
}

// ringtrain's CUDA kernels (model/sgns_device_ops.h) where this build has them. The query vectors are rows
// `u_rows` of `u_source`, or `u_source` itself when u_rows is undefined.
bool deviceKernelsTake(const at::Tensor& u_source, const at::Tensor& out_w) {
#if RINGTRAIN_HAVE_CUDA_KERNELS
  return detail::deviceKernelsApply(u_source, out_w);
#else
  (void)u_source;
  (void)out_w;
  return false;
#endif
}

std::pair<at::Tensor, at::Tensor> deviceScore(const at::Tensor& u_source, const at::Tensor& u_rows,
                                              const at::Tensor& out_w, const at::Tensor& context,
                                              const at::Tensor& negatives) {
#if RINGTRAIN_HAVE_CUDA_KERNELS
  return detail::sgnsDeviceScore(u_source, u_rows, out_w, context, negatives);
#else
  RT_THROW(Error, "sgns: this build has no CUDA kernels");
#endif
}

// {grad_u, the output table's gradient rows, their ids}.
std::tuple<at::Tensor, at::Tensor, at::Tensor> deviceBackward(const at::Tensor& coef, const at::Tensor& u_source,
                                                              const at::Tensor& u_rows, const at::Tensor& out_w,
                                                              const at::Tensor& context,
                                                              const at::Tensor& negatives,
                                                              const at::Tensor& grad_output) {
#if RINGTRAIN_HAVE_CUDA_KERNELS
  detail::SgnsDeviceGrads g =
      detail::sgnsDeviceBackward(coef, u_source, u_rows, out_w, context, negatives, grad_output);
  return {g.grad_u, g.out_values, g.out_ids};
#else
  RT_THROW(Error, "sgns: this build has no CUDA kernels");
#endif
}

// Scores of every (example, candidate) pair, the loss, and d loss / d score (for grad_output 1).
// ids [B, K+1]; returns {loss (0-dim), coef [B, K+1]}.
std::pair<at::Tensor, at::Tensor> scoreForward(const at::Tensor& u, const at::Tensor& out_w, const at::Tensor& ids) {
  const int64_t batch = ids.size(0), cands = ids.size(1), dim = u.size(1);
  const double inv_b = 1.0 / static_cast<double>(batch);
  if (useCpuKernels(u)) {
    at::Tensor coef = at::empty({batch, cands}, u.options());
    const float* pu = u.data_ptr<float>();
    const float* pw = out_w.data_ptr<float>();
    const int64_t* pid = ids.data_ptr<int64_t>();
    float* pc = coef.data_ptr<float>();
    double loss = 0.0;
    for (int64_t b = 0; b < batch; ++b) {
      if (b + kExamplesAhead < batch) prefetchCandidates(pw, pid + (b + kExamplesAhead) * cands, cands, dim);
      const float* ub = pu + b * dim;
      for (int64_t j = 0; j < cands; ++j) {
        const float* v = pw + pid[b * cands + j] * dim;
        float s = dot(ub, v, dim);
        const float sign = j == 0 ? 1.0f : -1.0f;
        loss -= logSigmoid(sign * s);
        // d/ds of -log sigmoid(sign * s) = -sign * sigmoid(-sign * s)
        pc[b * cands + j] = static_cast<float>(-sign * sigmoid(-sign * s) * inv_b);
      }
    }
    return {at::scalar_tensor(loss * inv_b, u.options()), coef};
  }
  const at::Tensor rows = gatherRows(out_w, ids).view({batch, cands, dim});
  const at::Tensor s = at::bmm(rows, u.unsqueeze(2)).squeeze(2);  // [B, K+1]
  at::Tensor sign = at::full({cands}, -1.0, u.options());
  sign.index_fill_(0, at::zeros({1}, ids.options()), 1.0);
  const at::Tensor ss = s * sign;
  const at::Tensor loss = -at::log_sigmoid(ss).sum() * inv_b;
  const at::Tensor coef = -sign * at::sigmoid(-ss) * inv_b;
  return {loss, coef};
}

// grad_u [B, D] = sum_j coef[b, j] out[ids[b, j]]; row values [B*(K+1), D] = coef[b, j] * u[b].
std::pair<at::Tensor, at::Tensor> scoreBackward(const at::Tensor& coef, const at::Tensor& u, const at::Tensor& out_w,
                                                const at::Tensor& ids) {
  const int64_t batch = ids.size(0), cands = ids.size(1), dim = u.size(1);
  if (useCpuKernels(u)) {
    at::Tensor grad_u = at::zeros({batch, dim}, u.options());
    at::Tensor values = at::empty({batch * cands, dim}, u.options());
    const float* pu = u.data_ptr<float>();
    const float* pw = out_w.data_ptr<float>();
    const int64_t* pid = ids.data_ptr<int64_t>();
    const float* pc = coef.data_ptr<float>();
    float* pg = grad_u.data_ptr<float>();
    float* pv = values.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b) {
      if (b + kExamplesAhead < batch) prefetchCandidates(pw, pid + (b + kExamplesAhead) * cands, cands, dim);
      const float* ub = pu + b * dim;
      float* gb = pg + b * dim;
      for (int64_t j = 0; j < cands; ++j) {
        const float c = pc[b * cands + j];
        const float* v = pw + pid[b * cands + j] * dim;
        float* out = pv + (b * cands + j) * dim;
        for (int64_t d = 0; d < dim; ++d) {
          gb[d] += c * v[d];
          out[d] = c * ub[d];
        }
      }
    }
    return {grad_u, values};
  }
  const at::Tensor rows = gatherRows(out_w, ids).view({batch, cands, dim});
  const at::Tensor grad_u = at::bmm(coef.unsqueeze(1), rows).squeeze(1);
  const at::Tensor values = (coef.unsqueeze(2) * u.unsqueeze(1)).reshape({batch * cands, dim});
  return {grad_u, values};
}

// Gradient of a [V, D] table from per-lookup rows: sparse COO (uncoalesced) or dense.
at::Tensor tableGrad(const at::Tensor& table, const at::Tensor& ids, const at::Tensor& values, bool sparse) {
  const at::Tensor flat = ids.reshape({-1});
  if (sparse) {
    return at::_sparse_coo_tensor_unsafe(flat.unsqueeze(0), values, table.sizes(), table.options().layout(at::kSparse));
  }
  at::Tensor grad = at::zeros_like(table);
  detail::indexAddRows(grad, flat, values, 1.0);
  return grad;
}

}  // namespace

// Sparse table gradients a rank keeps between backward passes of one step (holdSparseGradients): each pass's
// rows appended, handed over as one tensor by the first pass after release. Autograd would add each pass's
// tensor to the last (a new concatenation every pass, copying all rows so far); here the rows are copied once.
struct SparseGradientStash : torch::CustomClassHolder {
  static constexpr int kTables = 2;  // 0: the input table, 1: the output table
  std::mutex mu;  // backward nodes of one graph may run on several threads (one per device)
  bool holding = false;
  std::vector<at::Tensor> ids[kTables], values[kTables];

  bool empty() {
    std::lock_guard<std::mutex> lock(mu);
    for (int t = 0; t < kTables; ++t) {
      if (!ids[t].empty()) return false;
    }
    return true;
  }

  void hold(bool on) {
    std::lock_guard<std::mutex> lock(mu);
    holding = on;
  }

  // Stops holding and forgets what was kept.
  void drop() {
    std::lock_guard<std::mutex> lock(mu);
    holding = false;
    for (int t = 0; t < kTables; ++t) {
      ids[t].clear();
      values[t].clear();
    }
  }

  // The gradient autograd gets for `table` from this pass's rows: none while holding (the rows are kept),
  // else everything kept and these rows as one COO tensor (in pass order, as autograd's sums would hold them).
  at::Tensor take(int which, const at::Tensor& table, const at::Tensor& flat_ids, const at::Tensor& rows) {
    std::lock_guard<std::mutex> lock(mu);
    if (holding) {
      ids[which].push_back(flat_ids);
      values[which].push_back(rows);
      return at::Tensor();
    }
    if (ids[which].empty()) return sparseGrad(table, flat_ids, rows);
    ids[which].push_back(flat_ids);
    values[which].push_back(rows);
    const at::Tensor all_ids = at::cat(ids[which]), all_rows = at::cat(values[which]);
    ids[which].clear();
    values[which].clear();
    return sparseGrad(table, all_ids, all_rows);
  }

  static at::Tensor sparseGrad(const at::Tensor& table, const at::Tensor& flat_ids, const at::Tensor& rows) {
    return at::_sparse_coo_tensor_unsafe(flat_ids.unsqueeze(0), rows, table.sizes(),
                                         table.options().layout(at::kSparse));
  }
};

namespace {

SparseGradientStash& stashOf(AutogradContext* ctx) {
  return *static_cast<SparseGradientStash*>(ctx->saved_data["stash"].toCapsule().get());
}

// tableGrad through the stash: sparse gradients may be kept there (see SparseGradientStash).
at::Tensor tableGradVia(AutogradContext* ctx, int which, const at::Tensor& table, const at::Tensor& ids,
                        const at::Tensor& values, bool sparse) {
  if (!sparse) return tableGrad(table, ids, values, sparse);
  return stashOf(ctx).take(which, table, ids.reshape({-1}), values);
}

// out = x @ w^T + b
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  at::Tensor out = at::empty({x.size(0), w.size(0)}, x.options());
  detail::gemm(x, false, w, true, out, 0.0f);
  addBiasRows(out, b);
  return out;
}

// The model's autograd nodes. With a tower there are two, so that the output table's gradient is
// accumulated (and its DDP hook runs: the sparse sync starts summing its rows on a helper thread) before the
// tower's backward, which takes a good part of the step:
//   SgnsTowerFunction (in_w, w1, b1, w2, b2) -> u, the query vectors of the batch;
//   SgnsScoreFunction (u, out_w) -> loss.
// Without a tower one node, SgnsFunction (in_w, out_w) -> loss, does both: there is nothing to overlap,
// and on the device-kernel path the kernels read the query rows straight from the input table.
// The arithmetic, and its order, is the same either way. Inputs are tensors (LibTorch 1.13 custom functions
// reject undefined ones); ids and flags are not differentiable. On the device-kernel path the candidates
// stay as the loader gave them (context [B], negatives [B, K]); elsewhere they are joined into one
// [B, K+1] table.

// loss of query vectors u against the candidates: {loss, coef}, saving what scoreGradients needs.
at::Tensor scoreAndSave(AutogradContext* ctx, const at::Tensor& u_source, const at::Tensor& u_rows,
                        const at::Tensor& out_w, const at::Tensor& context, const at::Tensor& negatives,
                        bool fused) {
  at::Tensor loss, coef;
  if (fused) {
    std::tie(loss, coef) = deviceScore(u_source, u_rows, out_w, context, negatives);
    ctx->saved_data["context"] = context;
    ctx->saved_data["negatives"] = negatives;
  } else {
    const at::Tensor ids = candidateIds(context, negatives);
    std::tie(loss, coef) = scoreForward(u_source, out_w, ids);
    ctx->saved_data["ids"] = ids;
  }
  ctx->saved_data["out_w"] = out_w;
  ctx->saved_data["coef"] = coef;
  ctx->saved_data["fused"] = fused;
  return loss;
}

// {grad_u, the output table's gradient} from what scoreAndSave saved; u_source/u_rows as in scoreAndSave.
std::pair<at::Tensor, at::Tensor> scoreGradients(AutogradContext* ctx, const at::Tensor& go,
                                                 const at::Tensor& u_source, const at::Tensor& u_rows,
                                                 bool sparse) {
  const at::Tensor out_w = ctx->saved_data["out_w"].toTensor();
  at::Tensor coef = ctx->saved_data["coef"].toTensor();
  at::Tensor grad_u, out_values, out_ids;
  if (ctx->saved_data["fused"].toBool()) {
    std::tie(grad_u, out_values, out_ids) =
        deviceBackward(coef, u_source, u_rows, out_w, ctx->saved_data["context"].toTensor(),
                       ctx->saved_data["negatives"].toTensor(), go);
  } else {
    // The loss is a scalar; scaling coef by grad_output scales every gradient below.
    const bool unit = go.is_cpu() && go.numel() == 1 && go.item<double>() == 1.0;
    if (!unit) coef = coef * go;
    out_ids = ctx->saved_data["ids"].toTensor();
    std::tie(grad_u, out_values) = scoreBackward(coef, u_source, out_w, out_ids);
  }
  return {grad_u, tableGradVia(ctx, 1, out_w, out_ids, out_values, sparse)};
}

struct SgnsFunction : public torch::autograd::Function<SgnsFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& in_w, const at::Tensor& out_w,
                               const at::Tensor& center, const at::Tensor& context, const at::Tensor& negatives,
                               bool sparse, bool device_kernels, const Stash& stash) {
    ctx->saved_data["stash"] = c10::IValue::make_capsule(stash);
    // The direct device path reads the query rows from the input table in backward too: the table must not
    // change between forward and backward (the optimizer steps after backward).
    const bool direct = device_kernels && deviceKernelsTake(in_w, out_w);
    ctx->saved_data["in_w"] = in_w;
    ctx->saved_data["center"] = center;
    ctx->saved_data["sparse"] = sparse;
    ctx->saved_data["direct"] = direct;
    if (direct) return {scoreAndSave(ctx, in_w, center, out_w, context, negatives, /*fused=*/true)};
    const at::Tensor u = gatherRows(in_w, center);
    ctx->saved_data["u"] = u;
    const bool fused = device_kernels && deviceKernelsTake(u, out_w);
    return {scoreAndSave(ctx, u, at::Tensor(), out_w, context, negatives, fused)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor in_w = ctx->saved_data["in_w"].toTensor();
    const at::Tensor center = ctx->saved_data["center"].toTensor();
    const bool sparse = ctx->saved_data["sparse"].toBool();
    const bool direct = ctx->saved_data["direct"].toBool();
    const auto [grad_u, grad_out_w] =
        direct ? scoreGradients(ctx, grad_outputs[0], in_w, center, sparse)
               : scoreGradients(ctx, grad_outputs[0], ctx->saved_data["u"].toTensor(), at::Tensor(), sparse);
    const at::Tensor grad_in_w = tableGradVia(ctx, 0, in_w, center, grad_u, sparse);
    // No gradient for center, context, negatives, sparse, device_kernels, stash.
    return {grad_in_w, grad_out_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct SgnsScoreFunction : public torch::autograd::Function<SgnsScoreFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& out_w,
                               const at::Tensor& context, const at::Tensor& negatives, bool sparse,
                               bool device_kernels, const Stash& stash) {
    ctx->saved_data["stash"] = c10::IValue::make_capsule(stash);
    ctx->saved_data["u"] = u;
    ctx->saved_data["sparse"] = sparse;
    const bool fused = device_kernels && deviceKernelsTake(u, out_w);
    return {scoreAndSave(ctx, u, at::Tensor(), out_w, context, negatives, fused)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto [grad_u, grad_out_w] = scoreGradients(ctx, grad_outputs[0], ctx->saved_data["u"].toTensor(),
                                                     at::Tensor(), ctx->saved_data["sparse"].toBool());
    return {grad_u, grad_out_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct SgnsTowerFunction : public torch::autograd::Function<SgnsTowerFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& in_w, const at::Tensor& w1,
                               const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                               const at::Tensor& center, bool sparse, const Stash& stash) {
    ctx->saved_data["stash"] = c10::IValue::make_capsule(stash);
    const at::Tensor u0 = gatherRows(in_w, center);
    const at::Tensor h = linear(u0, w1, b1);
    const at::Tensor a = h.clamp_min(0);
    ctx->saved_data["in_w"] = in_w;
    ctx->saved_data["center"] = center;
    ctx->saved_data["sparse"] = sparse;
    ctx->saved_data["u0"] = u0;
    ctx->saved_data["h"] = h;
    ctx->saved_data["a"] = a;
    ctx->saved_data["w1"] = w1;
    ctx->saved_data["w2"] = w2;
    return {linear(a, w2, b2)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor& grad_u = grad_outputs[0];
    const at::Tensor u0 = ctx->saved_data["u0"].toTensor();
    const at::Tensor h = ctx->saved_data["h"].toTensor();
    const at::Tensor a = ctx->saved_data["a"].toTensor();
    const at::Tensor w1 = ctx->saved_data["w1"].toTensor();
    const at::Tensor w2 = ctx->saved_data["w2"].toTensor();
    at::Tensor grad_w2 = at::empty_like(w2);
    detail::gemm(grad_u, true, a, false, grad_w2, 0.0f);  // [D, H]
    const at::Tensor grad_b2 = columnSums(grad_u);
    at::Tensor grad_h = at::empty_like(h);
    detail::gemm(grad_u, false, w2, false, grad_h, 0.0f);  // [B, H]
    grad_h.masked_fill_(h <= 0, 0.0);
    at::Tensor grad_w1 = at::empty_like(w1);
    detail::gemm(grad_h, true, u0, false, grad_w1, 0.0f);  // [H, D]
    const at::Tensor grad_b1 = columnSums(grad_h);
    at::Tensor grad_u0 = at::empty_like(u0);
    detail::gemm(grad_h, false, w1, false, grad_u0, 0.0f);  // [B, D]
    const at::Tensor grad_in_w = tableGradVia(ctx, 0, ctx->saved_data["in_w"].toTensor(),
                                              ctx->saved_data["center"].toTensor(), grad_u0,
                                              ctx->saved_data["sparse"].toBool());
    // No gradient for center, sparse, stash.
    return {grad_in_w, grad_w1, grad_b1, grad_w2, grad_b2, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void checkIds(const at::Tensor& ids, const char* what, int64_t vocab) {
  RT_CHECK(ids.scalar_type() == at::kLong, what, " ids must be int64");
  // On a GPU the check would cost a host round trip every step; there the kernels stop on an out-of-range
  // index themselves (ringtrain's with a trap that names it, ATen's gathers with a device assert), and the
  // loader only produces vocabulary ids.
  if (ids.numel() == 0 || !ids.is_cpu()) return;
  // One reduction per tensor; cheap next to the step and it turns a segfault into a message.
  const auto [lo, hi] = at::aminmax(ids);
  const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
  if (min_id < 0 || max_id >= vocab) {
    RT_THROW(DataError, what, " ids out of range [0, ", vocab, "): min ", min_id, ", max ", max_id);
  }
}

}  // namespace

SgnsOptions sgnsOptionsFromConfig(const config::ModelOptions& model, int64_t vocab_size) {
  SgnsOptions o;
  o.vocab_size = vocab_size;
  o.dim = model.dim;
  o.tower_hidden = model.tower_hidden;
  o.sparse = model.sparse;
  o.init_scale = model.init_scale;
  return o;
}

SgnsModel::SgnsModel(const SgnsOptions& options, uint64_t seed)
    : options_(options), stash_(c10::make_intrusive<SparseGradientStash>()) {
  RT_CHECK_T(ConfigError, options.vocab_size > 0, "the vocabulary is empty");
  RT_CHECK_T(ConfigError, options.dim > 0, "model.dim must be positive");
  RT_CHECK_T(ConfigError, options.tower_hidden >= 0, "model.tower_hidden must be >= 0");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t v = options.vocab_size, d = options.dim, hdim = options.tower_hidden;
  const double s = options.init_scale > 0 ? options.init_scale : 0.5 / static_cast<double>(d);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  input_embedding_ =
      register_parameter("input_embedding", emptyTable({v, d}, at::kFloat, options.huge_pages).uniform_(-s, s, gen));
  at::Tensor out = emptyTable({v, d}, at::kFloat, options.huge_pages);
  if (options.zero_output_init) {
    out.zero_();
  } else {
    out.uniform_(-s, s, gen);
  }
  output_embedding_ = register_parameter("output_embedding", out);
  if (hdim > 0) {
    // torch.nn.Linear's default: weight and bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    const double b1 = 1.0 / std::sqrt(static_cast<double>(d));
    const double b2 = 1.0 / std::sqrt(static_cast<double>(hdim));
    tower_w1_ = register_parameter("tower_w1", at::empty({hdim, d}, f32).uniform_(-b1, b1, gen));
    tower_b1_ = register_parameter("tower_b1", at::empty({hdim}, f32).uniform_(-b1, b1, gen));
    tower_w2_ = register_parameter("tower_w2", at::empty({d, hdim}, f32).uniform_(-b2, b2, gen));
    tower_b2_ = register_parameter("tower_b2", at::empty({d}, f32).uniform_(-b2, b2, gen));
  }
}

at::Tensor SgnsModel::forward(const at::Tensor& center, const at::Tensor& context, const at::Tensor& negatives) {
  RT_CHECK(center.dim() == 1 && context.dim() == 1 && negatives.dim() == 2, "forward takes center [B], context [B], negatives [B, K]");
  RT_CHECK(center.size(0) == context.size(0) && center.size(0) == negatives.size(0), "batch sizes differ");
  const int64_t v = options_.vocab_size;
  checkIds(center, "center", v);
  checkIds(context, "context", v);
  checkIds(negatives, "negative", v);
  // The members share their TensorImpl with the registered parameters (Module::to() uses set_data), so
  // they stay valid across device moves.
  if (!hasTower()) {
    return SgnsFunction::apply(input_embedding_, output_embedding_, center.contiguous(), context.contiguous(),
                               negatives.contiguous(), options_.sparse, options_.device_kernels, stash_)[0];
  }
  const at::Tensor u = SgnsTowerFunction::apply(input_embedding_, tower_w1_, tower_b1_, tower_w2_, tower_b2_,
                                                center.contiguous(), options_.sparse, stash_)[0];
  return SgnsScoreFunction::apply(u, output_embedding_, context.contiguous(), negatives.contiguous(),
                                  options_.sparse, options_.device_kernels, stash_)[0];
}

at::Tensor SgnsModel::forwardReference(const at::Tensor& center, const at::Tensor& context,
                                       const at::Tensor& negatives) {
  const auto& params = named_parameters(false);
  at::Tensor u = at::embedding(params["input_embedding"], center, -1, false, options_.sparse);
  if (hasTower()) {
    u = at::linear(at::relu(at::linear(u, params["tower_w1"], params["tower_b1"])), params["tower_w2"],
                   params["tower_b2"]);
  }
  const at::Tensor v = at::embedding(params["output_embedding"], context, -1, false, options_.sparse);
  const at::Tensor vn = at::embedding(params["output_embedding"], negatives, -1, false, options_.sparse);
  const at::Tensor pos = (u * v).sum(-1);
  const at::Tensor neg = at::bmm(vn, u.unsqueeze(-1)).squeeze(-1);
  return -(at::log_sigmoid(pos).mean() + at::log_sigmoid(-neg).sum(-1).mean());
}

at::Tensor SgnsModel::queryVectors() const {
  at::NoGradGuard no_grad;
  const auto params = named_parameters(false);
  const at::Tensor in_w = params["input_embedding"];
  if (!hasTower()) return in_w.detach().clone();
  const at::Tensor h = at::linear(in_w, params["tower_w1"], params["tower_b1"]).clamp_min_(0);
  return at::linear(h, params["tower_w2"], params["tower_b2"]);
}

at::Tensor SgnsModel::outputVectors() const {
  at::NoGradGuard no_grad;
  return named_parameters(false)["output_embedding"].detach().clone();
}

void SgnsModel::holdSparseGradients(bool hold) { static_cast<SparseGradientStash&>(*stash_).hold(hold); }

bool SgnsModel::holdsSparseGradients() const { return !static_cast<SparseGradientStash&>(*stash_).empty(); }

void SgnsModel::dropHeldSparseGradients() { static_cast<SparseGradientStash&>(*stash_).drop(); }

std::vector<std::string> SgnsModel::sparseParameterNames() const {
  if (!options_.sparse) return {};
  return {"input_embedding", "output_embedding"};
}

std::string SgnsModel::layoutDescription() const {
  std::ostringstream out;
  out << "sgns vocab=" << options_.vocab_size << " dim=" << options_.dim << " tower=" << options_.tower_hidden
      << " sparse=" << (options_.sparse ? 1 : 0);
  return out.str();
}

}  // namespace ringtrain::model
