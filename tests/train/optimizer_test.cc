#include "ringtrain/train/optimizer.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"

namespace ringtrain::train {
namespace {

config::OptimOptions opts(const std::string& name, double lr = 0.1) {
  config::OptimOptions o;
  o.name = name;
  o.lr = lr;
  return o;
}

// Rows 1, 3 and 3 again (a duplicate, as uncoalesced gradients have) of a [6, 3] table.
at::Tensor sparseGrad(uint64_t seed, std::vector<int64_t> rows = {1, 3, 3}) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto n = static_cast<int64_t>(rows.size());
  const at::Tensor idx = at::tensor(rows, at::kLong).view({1, n});
  return at::sparse_coo_tensor(idx, at::randn({n, 3}, gen), {6, 3});
}

struct Pair {
  at::Tensor sparse_param, dense_param;
  std::unique_ptr<Optimizer> sparse_opt, dense_opt;
};

Pair makePair(const config::OptimOptions& o) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(42);
  const at::Tensor init = at::randn({6, 3}, gen);
  Pair p;
  p.sparse_param = init.clone().requires_grad_(true);
  p.dense_param = init.clone().requires_grad_(true);
  p.sparse_opt = makeOptimizer({{"w", p.sparse_param}}, o);
  p.dense_opt = makeOptimizer({{"w", p.dense_param}}, o);
  return p;
}

void stepBoth(Pair& p, const at::Tensor& grad) {
  p.sparse_param.mutable_grad() = grad;
  p.dense_param.mutable_grad() = grad.to_dense();
  p.sparse_opt->step();
  p.dense_opt->step();
}

TEST(Optimizer, SparseUpdateEqualsDenseOnTouchedRowsAndLeavesOthers) {
  for (const std::string name : {"sgd", "adagrad", "adam"}) {
    Pair p = makePair(opts(name));
    const at::Tensor before = p.sparse_param.detach().clone();
    stepBoth(p, sparseGrad(1));
    const at::Tensor touched = at::tensor({1, 3}, at::kLong), untouched = at::tensor({0, 2, 4, 5}, at::kLong);
    EXPECT_TRUE(at::allclose(p.sparse_param.index_select(0, touched), p.dense_param.index_select(0, touched), 1e-5, 1e-6))
        << name;
    EXPECT_TRUE(at::equal(p.sparse_param.index_select(0, untouched), before.index_select(0, untouched))) << name;
    EXPECT_FALSE(at::equal(p.sparse_param.index_select(0, touched), before.index_select(0, touched))) << name;
    if (name != "adam") {  // a second step on other rows: still equal for SGD and Adagrad everywhere
      stepBoth(p, sparseGrad(2, {0, 1, 5}));
      EXPECT_TRUE(at::allclose(p.sparse_param, p.dense_param, 1e-5, 1e-6)) << name;
    }
  }
}

TEST(Optimizer, SgdSparseIsExactIndexAdd) {
  Pair p = makePair(opts("sgd", 0.5));
  const at::Tensor before = p.sparse_param.detach().clone();
  const at::Tensor g = sparseGrad(3);
  stepBoth(p, g);
  EXPECT_TRUE(at::allclose(p.sparse_param, before - 0.5 * g.to_dense(), 1e-6, 1e-7));
}

TEST(Optimizer, LazyAdamUsesPerRowStepCounts) {
  Pair p = makePair(opts("adam", 0.01));
  stepBoth(p, sparseGrad(1, {1, 3}));
  const at::Tensor after1 = p.sparse_param.detach().clone();
  // Step 2 touches rows 3 and 5: row 1 (not touched) keeps its value under lazy Adam, while dense Adam
  // keeps moving it with its momentum.
  stepBoth(p, sparseGrad(2, {3, 5}));
  EXPECT_TRUE(at::equal(p.sparse_param[1], after1[1]));
  EXPECT_FALSE(at::allclose(p.dense_param[1], after1[1]));
  // Row 3 was touched at both steps, as every row of the dense run: identical to dense Adam.
  EXPECT_TRUE(at::allclose(p.sparse_param[3], p.dense_param[3], 1e-5, 1e-7));
  // Row 5's first update: its own step count is 1, so the bias-corrected step is lr * g / (|g| + eps).
  const at::Tensor g5 = sparseGrad(2, {3, 5}).to_dense()[5];
  const at::Tensor expect = after1[5] - 0.01 * g5 / (g5.abs() + 1e-8);
  EXPECT_TRUE(at::allclose(p.sparse_param[5], expect, 1e-5, 1e-7));
  const TensorDict state = p.sparse_opt->stateDict();
  EXPECT_TRUE(at::equal(state.at("w.row_step"), at::tensor({0.0, 1.0, 0.0, 2.0, 0.0, 1.0}, at::kDouble)));
}

TEST(Optimizer, WeightDecayAppliesToDenseParametersOnly) {
  config::OptimOptions o = opts("sgd", 0.1);
  o.weight_decay = 0.5;
  at::Tensor dense_param = at::ones({2, 3}).requires_grad_(true);
  at::Tensor table = at::ones({6, 3}).requires_grad_(true);
  auto opt = makeOptimizer({{"dense", dense_param}, {"table", table}}, o);
  dense_param.mutable_grad() = at::zeros({2, 3});
  const at::Tensor g = sparseGrad(1);
  table.mutable_grad() = g;
  opt->step();
  EXPECT_TRUE(at::allclose(dense_param, at::full({2, 3}, 1.0 - 0.1 * 0.5)));
  EXPECT_TRUE(at::allclose(table, at::ones({6, 3}) - 0.1 * g.to_dense()));
}

TEST(Optimizer, SkipsParametersWithoutGradientAndZeroGradDropsThem) {
  at::Tensor a = at::ones({3}).requires_grad_(true), b = at::ones({3}).requires_grad_(true);
  auto opt = makeOptimizer({{"a", a}, {"b", b}}, opts("adam"));
  a.mutable_grad() = at::ones({3});
  opt->step();
  EXPECT_TRUE(at::equal(b, at::ones({3})));
  EXPECT_FALSE(at::equal(a, at::ones({3})));
  opt->zeroGrad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_EQ(opt->stepCount(), 1);
}

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  for (const std::string name : {"sgd", "adagrad", "adam"}) {
    Pair p = makePair(opts(name));
    stepBoth(p, sparseGrad(1));
    // A fresh optimizer on a copy of the parameters, loaded from the first one's state.
    at::Tensor copy = p.sparse_param.detach().clone().requires_grad_(true);
    auto restored = makeOptimizer({{"w", copy}}, opts(name, 0.7));
    restored->loadStateDict(p.sparse_opt->stateDict());
    EXPECT_DOUBLE_EQ(restored->learningRate(), 0.1);
    EXPECT_EQ(restored->stepCount(), 1);
    const at::Tensor g = sparseGrad(5);
    p.sparse_param.mutable_grad() = g;
    copy.mutable_grad() = g;
    p.sparse_opt->step();
    restored->step();
    EXPECT_TRUE(at::equal(p.sparse_param, copy)) << name;
  }
}

TEST(Optimizer, StateFromAnotherOptimizerIsRejected) {
  at::Tensor a = at::ones({6, 3}).requires_grad_(true);
  auto adam = makeOptimizer({{"w", a}}, opts("adam"));
  auto adagrad = makeOptimizer({{"w", a}}, opts("adagrad"));
  auto sgd = makeOptimizer({{"w", a}}, opts("sgd"));
  EXPECT_THROW(adam->loadStateDict(adagrad->stateDict()), DataError);
  EXPECT_THROW(sgd->loadStateDict(adam->stateDict()), DataError);
  EXPECT_THROW(makeOptimizer({{"w", a}}, opts("lion")), ConfigError);
}

TEST(LrSchedule, WarmupThenLinearDecayToMinRatio) {
  config::OptimOptions o = opts("sgd", 1.0);
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.1;
  const LrSchedule s(o, 110);
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(4), 0.5);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_NEAR(s.at(59), 1.0 - 0.9 * 49.0 / 99.0, 1e-12);
  EXPECT_DOUBLE_EQ(s.at(109), 0.1);
  EXPECT_DOUBLE_EQ(s.at(500), 0.1);  // past the end: stays at the floor
  for (int64_t i = 11; i < 110; ++i) EXPECT_LT(s.at(i), s.at(i - 1));
}

TEST(LrSchedule, ConstantAndDegenerateCases) {
  config::OptimOptions o = opts("sgd", 0.5);
  o.schedule = "constant";
  o.warmup_steps = 4;
  const LrSchedule c(o, 100);
  EXPECT_DOUBLE_EQ(c.at(0), 0.125);
  EXPECT_DOUBLE_EQ(c.at(3), 0.5);
  EXPECT_DOUBLE_EQ(c.at(99), 0.5);
  o.schedule = "linear";
  o.warmup_steps = 0;
  o.min_lr_ratio = 0.0;
  const LrSchedule one(o, 1);
  EXPECT_DOUBLE_EQ(one.at(0), 0.5);
  const LrSchedule two(o, 2);
  EXPECT_DOUBLE_EQ(two.at(0), 0.5);
  EXPECT_DOUBLE_EQ(two.at(1), 0.0);
  o.schedule = "cosine";
  EXPECT_THROW(LrSchedule(o, 10), ConfigError);
}

}  // namespace
}  // namespace ringtrain::train
