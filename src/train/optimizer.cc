#include "ringtrain/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "core/prefetch.h"
#include "model/row_ops.h"
#include "model/table_memory.h"
#include "ringtrain/core/error.h"

namespace ringtrain::train {
namespace {

// [n] -> [n, 1, ...] so per-row factors broadcast over a row's elements.
at::Tensor perRow(const at::Tensor& factors, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(like.dim(), 1)), 1);
  shape[0] = factors.size(0);
  return factors.view(shape);
}

// The fused CPU loops below apply to float32 contiguous parameters and state (the embedding tables); they do
// what the ATen fallbacks do, row by row, without the ~10 temporaries of [rows, D] per update (each a fresh
// mmap and page faults at this size).
bool fusedRows(const at::Tensor& param, const at::Tensor& values) {
  return param.is_cpu() && param.scalar_type() == at::kFloat && param.is_contiguous() && param.dim() >= 1 &&
         values.is_cpu() && values.scalar_type() == at::kFloat;
}

class Sgd final : public Optimizer {
 public:
  using Optimizer::Optimizer;

 protected:
  void initState(Slot&) override {}
  void updateDense(Slot& slot, const at::Tensor& grad) override {
    if (options_.weight_decay != 0.0) {
      slot.param.add_(grad + options_.weight_decay * slot.param, -lr_);
    } else {
      slot.param.add_(grad, -lr_);
    }
  }
  void updateSparse(Slot& slot, const at::Tensor& grad) override {
    // Duplicate rows add up in index_add_, exactly as coalescing would sum them first.
    model::detail::indexAddRows(slot.param, grad._indices()[0], grad._values(), -lr_);
  }
  bool wantsCoalesced() const override { return false; }
};

class Adagrad final : public Optimizer {
 public:
  using Optimizer::Optimizer;

 protected:
  void initState(Slot& slot) override { slot.state["sum"] = model::zerosLikeTable(slot.param); }
  void updateDense(Slot& slot, const at::Tensor& grad_in) override {
    at::Tensor grad = grad_in;
    if (options_.weight_decay != 0.0) grad = grad + options_.weight_decay * slot.param;
    at::Tensor& sum = slot.state["sum"];
    sum.addcmul_(grad, grad);
    slot.param.addcdiv_(grad, sum.sqrt().add_(options_.eps), -lr_);
  }
  void updateSparse(Slot& slot, const at::Tensor& grad) override {
    const at::Tensor idx = grad._indices()[0];
    const at::Tensor values = grad._values();
    at::Tensor& sum = slot.state["sum"];
    if (fusedRows(slot.param, values) && sum.is_contiguous()) {
      const at::Tensor ix = idx.contiguous();
      const at::Tensor vals = values.contiguous();
      const int64_t n = ix.numel(), width = n ? vals.numel() / n : 0;
      const int64_t* pi = ix.data_ptr<int64_t>();
      const float* pg = vals.data_ptr<float>();
      float* pp = slot.param.data_ptr<float>();
      float* ps = sum.data_ptr<float>();
      const auto lr = static_cast<float>(lr_), eps = static_cast<float>(options_.eps);
      for (int64_t i = 0; i < n; ++i) {
        if (i + ::ringtrain::detail::kRowsAhead < n) {
          const int64_t ahead = pi[i + ::ringtrain::detail::kRowsAhead];
          ::ringtrain::detail::prefetchRow<true>(pp, ahead, width);
          ::ringtrain::detail::prefetchRow<true>(ps, ahead, width);
        }
        float* p = pp + pi[i] * width;
        float* acc = ps + pi[i] * width;
        const float* g = pg + i * width;
        for (int64_t d = 0; d < width; ++d) {
          acc[d] += g[d] * g[d];
          p[d] -= lr * g[d] / (std::sqrt(acc[d]) + eps);
        }
      }
      return;
    }
    const at::Tensor rows = sum.index_select(0, idx).addcmul_(values, values);
    sum.index_copy_(0, idx, rows);
    model::detail::indexAddRows(slot.param, idx, values / rows.sqrt().add_(options_.eps), -lr_);
  }
};

class Adam final : public Optimizer {
 public:
  using Optimizer::Optimizer;

 protected:
  void initState(Slot& slot) override {
    slot.state["exp_avg"] = model::zerosLikeTable(slot.param);
    slot.state["exp_avg_sq"] = model::zerosLikeTable(slot.param);
    const int64_t rows = slot.param.dim() == 0 ? 1 : slot.param.size(0);
    slot.state["row_step"] = at::zeros({rows}, slot.param.options().dtype(at::kDouble));
  }
  // Shared by both paths: m, v are the (gathered) moment rows, already updated; t the rows' step counts.
  at::Tensor direction(const at::Tensor& m, const at::Tensor& v, const at::Tensor& t, const at::Tensor& like) {
    const at::Tensor bc1 = (1.0 - at::pow(options_.beta1, t)).to(like.scalar_type());
    const at::Tensor bc2 = (1.0 - at::pow(options_.beta2, t)).to(like.scalar_type());
    return (m / perRow(bc1, like)) / (v / perRow(bc2, like)).sqrt_().add_(options_.eps);
  }
  void updateDense(Slot& slot, const at::Tensor& grad_in) override {
    at::Tensor grad = grad_in;
    if (options_.weight_decay != 0.0) grad = grad + options_.weight_decay * slot.param;
    at::Tensor& m = slot.state["exp_avg"];
    at::Tensor& v = slot.state["exp_avg_sq"];
    at::Tensor& t = slot.state["row_step"];
    m.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    v.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    t.add_(1.0);
    const at::Tensor p = slot.param.dim() == 0 ? slot.param.view({1}) : slot.param;
    p.add_(direction(m.view(p.sizes()), v.view(p.sizes()), t, p), -lr_);
  }
  void updateSparse(Slot& slot, const at::Tensor& grad) override {
    const at::Tensor idx = grad._indices()[0];
    const at::Tensor g = grad._values();
    at::Tensor& m = slot.state["exp_avg"];
    at::Tensor& v = slot.state["exp_avg_sq"];
    at::Tensor& t = slot.state["row_step"];
    if (fusedRows(slot.param, g) && m.is_contiguous() && v.is_contiguous() && t.is_contiguous()) {
      const at::Tensor ix = idx.contiguous();
      const at::Tensor vals = g.contiguous();
      const int64_t n = ix.numel(), width = n ? vals.numel() / n : 0;
      const int64_t* pi = ix.data_ptr<int64_t>();
      const float* pg = vals.data_ptr<float>();
      float* pp = slot.param.data_ptr<float>();
      float* pm = m.data_ptr<float>();
      float* pv = v.data_ptr<float>();
      double* pt = t.data_ptr<double>();
      const double b1 = options_.beta1, b2 = options_.beta2;
      const auto fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
      const auto eps = static_cast<float>(options_.eps);
      for (int64_t i = 0; i < n; ++i) {
        if (i + ::ringtrain::detail::kRowsAhead < n) {
          const int64_t ahead = pi[i + ::ringtrain::detail::kRowsAhead];
          ::ringtrain::detail::prefetchRow<true>(pp, ahead, width);
          ::ringtrain::detail::prefetchRow<true>(pm, ahead, width);
          ::ringtrain::detail::prefetchRow<true>(pv, ahead, width);
        }
        const int64_t r = pi[i];
        const double step = pt[r] += 1.0;
        // Same float32 arithmetic as the ATen path: corrections computed in double, then rounded.
        const auto bc1 = static_cast<float>(1.0 - std::pow(b1, step));
        const auto bc2 = static_cast<float>(1.0 - std::pow(b2, step));
        float* p = pp + r * width;
        float* mr = pm + r * width;
        float* vr = pv + r * width;
        const float* gr = pg + i * width;
        for (int64_t d = 0; d < width; ++d) {
          mr[d] = mr[d] * fb1 + gr[d] * (1.0f - fb1);
          vr[d] = vr[d] * fb2 + gr[d] * gr[d] * (1.0f - fb2);
          p[d] -= static_cast<float>(lr_) * ((mr[d] / bc1) / (std::sqrt(vr[d] / bc2) + eps));
        }
      }
      return;
    }
    const at::Tensor m_rows = m.index_select(0, idx).mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    const at::Tensor v_rows = v.index_select(0, idx).mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    const at::Tensor t_rows = t.index_select(0, idx).add_(1.0);
    m.index_copy_(0, idx, m_rows);
    v.index_copy_(0, idx, v_rows);
    t.index_copy_(0, idx, t_rows);
    model::detail::indexAddRows(slot.param, idx, direction(m_rows, v_rows, t_rows, g), -lr_);
  }
};

}  // namespace

Optimizer::Optimizer(NamedTensors params, const config::OptimOptions& options)
    : options_(options), lr_(options.lr), name_(options.name) {
  for (auto& [name, param] : params) {
    RT_CHECK(param.defined(), "optimizer parameter '", name, "' is undefined");
    slots_.push_back(Slot{name, param, {}});
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::step() {
  at::NoGradGuard no_grad;
  for (Slot& slot : slots_) {
    if (slot.state.empty()) initState(slot);
    const at::Tensor grad = slot.param.grad();
    if (!grad.defined()) continue;
    if (grad.is_sparse()) {
      updateSparse(slot, wantsCoalesced() && !grad.is_coalesced() ? model::detail::coalesceRows(grad) : grad);
    } else {
      updateDense(slot, grad);
    }
  }
  ++steps_;
}

void Optimizer::zeroGrad() {
  for (Slot& slot : slots_) {
    if (slot.param.grad().defined()) slot.param.mutable_grad() = at::Tensor();
  }
}

TensorDict Optimizer::stateDict() const {
  TensorDict out;
  for (const Slot& slot : slots_) {
    Slot copy = slot;
    if (copy.state.empty()) const_cast<Optimizer*>(this)->initState(copy);
    for (const auto& [key, tensor] : copy.state) out[slot.name + "." + key] = tensor.detach().to(at::kCPU).clone();
  }
  out["step"] = at::scalar_tensor(steps_, at::kLong);
  out["lr"] = at::scalar_tensor(lr_, at::kDouble);
  return out;
}

void Optimizer::loadStateDict(const TensorDict& state) {
  at::NoGradGuard no_grad;
  size_t expected = 2;
  for (Slot& slot : slots_) {
    if (slot.state.empty()) initState(slot);
    for (auto& [key, tensor] : slot.state) {
      const std::string name = slot.name + "." + key;
      const auto it = state.find(name);
      if (it == state.end()) RT_THROW(DataError, "optimizer state has no '", name, "' (", name_, " optimizer)");
      if (it->second.sizes() != tensor.sizes()) {
        RT_THROW(DataError, "optimizer state '", name, "' has shape ", it->second.sizes(), ", expected ", tensor.sizes());
      }
      tensor.copy_(it->second);
      ++expected;
    }
  }
  const auto step = state.find("step");
  const auto lr = state.find("lr");
  if (step == state.end() || lr == state.end()) RT_THROW(DataError, "optimizer state lacks 'step' or 'lr'");
  if (state.size() != expected) {
    RT_THROW(DataError, "optimizer state has ", state.size(), " entries, the ", name_, " optimizer expects ", expected,
             " (written by another optimizer?)");
  }
  steps_ = step->second.item<int64_t>();
  lr_ = lr->second.item<double>();
}

void Optimizer::placeState(const std::vector<std::string>& params,
                           const std::function<at::Tensor(const std::string& name, const at::Tensor& state)>& place) {
  at::NoGradGuard no_grad;
  for (const std::string& name : params) {
    RT_CHECK(std::any_of(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.name == name; }),
             "placeState: the optimizer has no parameter '", name, "'");
  }
  for (Slot& slot : slots_) {
    if (std::find(params.begin(), params.end(), slot.name) == params.end()) continue;
    if (slot.state.empty()) initState(slot);
    for (auto& [key, tensor] : slot.state) {
      const std::string name = slot.name + "." + key;
      at::Tensor placed = place(name, tensor);
      RT_CHECK(placed.sizes() == tensor.sizes() && placed.scalar_type() == tensor.scalar_type(),
               "optimizer state '", name, "' was placed with another shape or dtype");
      tensor = placed;
    }
  }
}

std::unique_ptr<Optimizer> makeOptimizer(NamedTensors params, const config::OptimOptions& options) {
  if (options.name == "sgd") return std::make_unique<Sgd>(std::move(params), options);
  if (options.name == "adagrad") return std::make_unique<Adagrad>(std::move(params), options);
  if (options.name == "adam") return std::make_unique<Adam>(std::move(params), options);
  RT_THROW(ConfigError, "optim.name: unknown optimizer '", options.name, "' (sgd | adagrad | adam)");
}

LrSchedule::LrSchedule(const config::OptimOptions& options, int64_t total_steps)
    : lr_(options.lr),
      min_ratio_(options.min_lr_ratio),
      warmup_(std::max<int64_t>(0, options.warmup_steps)),
      total_(std::max<int64_t>(1, total_steps)),
      linear_(options.schedule == "linear") {
  RT_CHECK_T(ConfigError, options.schedule == "linear" || options.schedule == "constant",
             "optim.schedule: unknown schedule '", options.schedule, "' (linear | constant)");
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_) return lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (!linear_) return lr_;
  const int64_t last = total_ - 1;
  if (last <= warmup_) return lr_;
  const double frac = std::min(1.0, static_cast<double>(step - warmup_) / static_cast<double>(last - warmup_));
  return lr_ * (1.0 - frac * (1.0 - min_ratio_));
}

}  // namespace ringtrain::train
