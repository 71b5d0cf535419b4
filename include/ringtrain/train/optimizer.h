// Optimizers that update dense parameters and embedding tables with sparse gradients alike, and the
// learning-rate schedule. (torch::optim in LibTorch 1.13 C++ rejects sparse gradients.)
//
// A parameter's gradient is read from param.grad(): dense, or sparse COO over dim 0 (indices [1, n],
// values [n, ...]), coalesced or not. A sparse gradient updates only the rows it names, in vectorised
// index_select/index_add_ form (no per-row loops):
//   SGD      p[r]  -= lr * g[r]                                (duplicates summed: no coalescing needed)
//   Adagrad  G[r]  += g[r]^2;  p[r] -= lr * g[r] / (sqrt(G[r]) + eps)
//   Adam     lazy: only touched rows' moments move, and each row keeps its own step count t[r], so the bias
//            correction of a row depends on how often that row was updated (for a row touched every step
//            this is exactly dense Adam; an untouched row's moments do not decay).
//            m[r] = b1 m[r] + (1-b1) g[r];  v[r] = b2 v[r] + (1-b2) g[r]^2;  t[r] += 1
//            p[r] -= lr * (m[r] / (1 - b1^t[r])) / (sqrt(v[r] / (1 - b2^t[r])) + eps)
// Sparse rows are coalesced first (duplicate ids summed) for Adagrad and Adam. weight_decay (L2, added to
// the gradient) applies to dense parameters only. A parameter without a gradient is skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/config/config.h"

namespace ringtrain::train {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
using TensorDict = std::map<std::string, at::Tensor>;

class Optimizer {
 public:
  // `params` are the live parameter tensors (shared storage with the model), in a fixed order.
  Optimizer(NamedTensors params, const config::OptimOptions& options);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient, with the current learning rate.
  void step();
  // Drops all gradients (param.grad() becomes undefined).
  void zeroGrad();

  void setLearningRate(double lr) { lr_ = lr; }
  double learningRate() const { return lr_; }
  int64_t stepCount() const { return steps_; }
  const std::string& name() const { return name_; }

  // Optimizer state as named tensors ("<param>.<slot>", plus "step"), for checkpoints; tensors are CPU
  // copies. loadStateDict checks names and shapes and throws DataError naming the first mismatch.
  TensorDict stateDict() const;
  void loadStateDict(const TensorDict& state);

  // Replaces each state tensor of the parameters named in `params` by place(name, tensor), which must return
  // a tensor of the same shape and values (creating the state first where there is none yet). For tables
  // whose rows the ranks update out of one shared copy (ddp.sparse_sync shared), so that their per-row
  // state is one copy too: place is then DistributedDataParallel::shareOnHost. Parameters are visited in the
  // optimizer's order and their state by slot name, the same on every rank, so `place` may be collective.
  void placeState(const std::vector<std::string>& params,
                  const std::function<at::Tensor(const std::string& name, const at::Tensor& state)>& place);

 protected:
  struct Slot {
    std::string name;
    at::Tensor param;
    std::map<std::string, at::Tensor> state;  // slot name -> tensor, created by initState
  };
  virtual void initState(Slot& slot) = 0;
  virtual void updateDense(Slot& slot, const at::Tensor& grad) = 0;
  // grad: sparse COO; coalesced already when wantsCoalesced().
  virtual void updateSparse(Slot& slot, const at::Tensor& grad) = 0;
  virtual bool wantsCoalesced() const { return true; }

  config::OptimOptions options_;
  std::vector<Slot> slots_;
  double lr_;
  int64_t steps_ = 0;
  std::string name_;
};

// sgd | adagrad | adam (ConfigError otherwise).
std::unique_ptr<Optimizer> makeOptimizer(NamedTensors params, const config::OptimOptions& options);

// Learning rate for a step: linear warm-up from lr/warmup to lr over warmup_steps steps (step s < warmup
// gets lr * (s+1) / warmup), then either constant, or (schedule: linear) a straight line from lr right
// after warm-up down to min_lr_ratio * lr at the last step (total_steps - 1). Steps count from 0.
class LrSchedule {
 public:
  LrSchedule(const config::OptimOptions& options, int64_t total_steps);
  double at(int64_t step) const;

 private:
  double lr_;
  double min_ratio_;
  int64_t warmup_;
  int64_t total_;
  bool linear_;
};

}  // namespace ringtrain::train
