#include "ringtrain/model/sgns_model.h"

#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/cpu_gemm.h"
#include "ringtrain/core/error.h"

namespace ringtrain::model {
namespace {

SgnsOptions options(int64_t vocab, int dim, int hidden, bool sparse) {
  SgnsOptions o;
  o.vocab_size = vocab;
  o.dim = dim;
  o.tower_hidden = hidden;
  o.sparse = sparse;
  o.zero_output_init = false;
  return o;
}

at::Tensor ids(std::vector<int64_t> v, std::vector<int64_t> shape) {
  return at::tensor(v, at::kLong).view(shape);
}

at::Tensor dense(const at::Tensor& g) { return g.is_sparse() ? g.to_dense() : g; }

struct Batch {
  at::Tensor center, context, negatives;
};

Batch randomBatch(int64_t vocab, int64_t b, int64_t k, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return {at::randint(0, vocab, {b}, gen), at::randint(0, vocab, {b}, gen), at::randint(0, vocab, {b, k}, gen)};
}

TEST(SgnsModel, LossMatchesClosedFormOnTinyInputs) {
  SgnsModel m(options(4, 2, 0, true), 1);
  {
    at::NoGradGuard g;
    m.inputEmbedding().copy_(at::tensor({1.0f, 0.0f, 0.0f, 1.0f, 0.5f, 0.5f, -1.0f, 2.0f}).view({4, 2}));
    m.outputEmbedding().copy_(at::tensor({0.3f, -0.2f, 1.0f, 1.0f, -0.5f, 0.25f, 2.0f, 0.0f}).view({4, 2}));
  }
  const float in[4][2] = {{1, 0}, {0, 1}, {0.5f, 0.5f}, {-1, 2}};
  const float out[4][2] = {{0.3f, -0.2f}, {1, 1}, {-0.5f, 0.25f}, {2, 0}};
  auto dot = [&](int a, int b) { return double(in[a][0]) * out[b][0] + double(in[a][1]) * out[b][1]; };
  auto ls = [](double x) { return -std::log1p(std::exp(-x)); };
  // Two examples: (center 0, context 1, negatives 2, 3) and (center 3, context 2, negatives 0, 0).
  const double expected =
      (-(ls(dot(0, 1)) + ls(-dot(0, 2)) + ls(-dot(0, 3))) - (ls(dot(3, 2)) + ls(-dot(3, 0)) + ls(-dot(3, 0)))) / 2;
  const at::Tensor loss = m.forward(ids({0, 3}, {2}), ids({1, 2}, {2}), ids({2, 3, 0, 0}, {2, 2}));
  EXPECT_NEAR(loss.item<double>(), expected, 1e-6);
  loss.backward();
  // d loss / d out[0] comes from example 2's two negatives: 2 * sigmoid(dot(3,0)) * in[3] / 2.
  const double sig = 1.0 / (1.0 + std::exp(-dot(3, 0)));
  const at::Tensor g_out = dense(m.outputEmbedding().grad());
  EXPECT_NEAR(g_out[0][0].item<double>(), sig * in[3][0], 1e-6);
  EXPECT_NEAR(g_out[0][1].item<double>(), sig * in[3][1], 1e-6);
  // d loss / d in[0] = (-(1 - s(p)) out[1] + s(n1) out[2] + s(n2) out[3]) / 2.
  auto s = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  const at::Tensor g_in = dense(m.inputEmbedding().grad());
  for (int d = 0; d < 2; ++d) {
    const double e = (-(1 - s(dot(0, 1))) * out[1][d] + s(dot(0, 2)) * out[2][d] + s(dot(0, 3)) * out[3][d]) / 2;
    EXPECT_NEAR(g_in[0][d].item<double>(), e, 1e-6);
  }
  EXPECT_EQ(g_in[1].abs().sum().item<double>(), 0.0);  // item 1 was never a center
}

void expectFusedEqualsReference(int hidden, bool sparse) {
  SgnsModel fused(options(50, 8, hidden, sparse), 7);
  SgnsModel ref(options(50, 8, hidden, sparse), 7);
  const Batch b = randomBatch(50, 33, 5, 3);
  const at::Tensor l1 = fused.forward(b.center, b.context, b.negatives);
  const at::Tensor l2 = ref.forwardReference(b.center, b.context, b.negatives);
  EXPECT_NEAR(l1.item<double>(), l2.item<double>(), 1e-5);
  l1.backward();
  l2.backward();
  const auto p1 = fused.named_parameters();
  const auto p2 = ref.named_parameters();
  ASSERT_EQ(p1.size(), hidden > 0 ? 6u : 2u);
  for (const auto& p : p1) {
    const at::Tensor g1 = p.value().grad();
    const at::Tensor g2 = p2[p.key()].grad();
    ASSERT_TRUE(g1.defined()) << p.key();
    EXPECT_TRUE(at::allclose(dense(g1), dense(g2), 1e-4, 1e-6)) << p.key();
  }
}

TEST(SgnsModel, FusedMatchesAutogradReference) {
  expectFusedEqualsReference(0, true);
  expectFusedEqualsReference(0, false);
  expectFusedEqualsReference(12, true);
  expectFusedEqualsReference(12, false);
}

TEST(SgnsModel, SparseGradientsAreSparseRowsOfTheBatch) {
  SgnsModel m(options(1000, 16, 32, true), 1);
  const Batch b = randomBatch(1000, 64, 5, 2);
  m.forward(b.center, b.context, b.negatives).backward();
  const at::Tensor gi = m.inputEmbedding().grad();
  const at::Tensor go = m.outputEmbedding().grad();
  ASSERT_TRUE(gi.is_sparse());
  ASSERT_TRUE(go.is_sparse());
  EXPECT_EQ(gi._nnz(), 64);
  EXPECT_EQ(go._nnz(), 64 * 6);
  EXPECT_EQ(gi.sizes(), m.inputEmbedding().sizes());
  EXPECT_FALSE(m.named_parameters()["tower_w1"].grad().is_sparse());
  EXPECT_EQ(m.sparseParameterNames().size(), 2u);

  SgnsModel d(options(1000, 16, 0, false), 1);
  d.forward(b.center, b.context, b.negatives).backward();
  EXPECT_FALSE(d.inputEmbedding().grad().is_sparse());
  EXPECT_TRUE(d.sparseParameterNames().empty());
}

// Micro-batches with the tables' rows held in the model (holdSparseGradients): nothing reaches .grad() while
// held, and the releasing backward hands over every pass's rows, in pass order, as one tensor per table: the
// same sums autograd's own accumulation gives, with one copy instead of one per pass. With and
// without a tower (two autograd nodes, or one).
void expectHeldRowsMatchAutogradSums(int hidden) {
  SCOPED_TRACE(hidden > 0 ? "tower" : "no tower");
  const Batch b = randomBatch(1000, 96, 5, 7);
  SgnsModel held(options(1000, 16, hidden, true), 3), summed(options(1000, 16, hidden, true), 3);
  // A first step, released, then cleared as a trainer's zero_grad does: the second step starts from nothing.
  for (SgnsModel* m : {&held, &summed}) {
    m->holdSparseGradients(true);
    m->forward(b.center.narrow(0, 0, 8), b.context.narrow(0, 0, 8), b.negatives.narrow(0, 0, 8)).backward();
    m->holdSparseGradients(false);
    m->forward(b.center.narrow(0, 8, 8), b.context.narrow(0, 8, 8), b.negatives.narrow(0, 8, 8)).backward();
    for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
  }
  for (int pass = 0; pass < 3; ++pass) {
    const at::Tensor c = b.center.narrow(0, 32 * pass, 32), x = b.context.narrow(0, 32 * pass, 32),
                     n = b.negatives.narrow(0, 32 * pass, 32);
    held.holdSparseGradients(pass < 2);
    held.forward(c, x, n).backward();
    summed.forward(c, x, n).backward();
    if (pass < 2) {
      EXPECT_FALSE(held.inputEmbedding().grad().defined()) << "pass " << pass;
      EXPECT_FALSE(held.outputEmbedding().grad().defined()) << "pass " << pass;
      EXPECT_TRUE(held.holdsSparseGradients());
    }
  }
  EXPECT_FALSE(held.holdsSparseGradients()) << "all handed over";
  for (const char* table : {"input_embedding", "output_embedding"}) {
    const at::Tensor h = held.named_parameters()[table].grad(), a = summed.named_parameters()[table].grad();
    ASSERT_TRUE(h.is_sparse()) << table;
    EXPECT_EQ(h._nnz(), (std::string(table) == "input_embedding" ? 1 : 6) * b.center.size(0))
        << table << ": one row per lookup of every pass";
    // Autograd's sums merge some equal rows as they go, which moves float roundings; the sums are the same.
    EXPECT_TRUE(at::allclose(h.to_dense(), a.to_dense(), 1e-5, 1e-7)) << table;
  }
  EXPECT_TRUE(at::equal(held.inputEmbedding().grad()._indices()[0], b.center))
      << "the input table's rows are the passes' centers in pass order, nothing of the first step";
  if (hidden > 0) {
    EXPECT_TRUE(at::equal(held.named_parameters()["tower_w1"].grad(), summed.named_parameters()["tower_w1"].grad()))
        << "the tower's dense gradients accumulate as before";
  }
  // Rows dropped (a pass that threw) are forgotten: the next backward hands over only its own.
  held.holdSparseGradients(true);
  held.forward(b.center.narrow(0, 0, 8), b.context.narrow(0, 0, 8), b.negatives.narrow(0, 0, 8)).backward();
  ASSERT_TRUE(held.holdsSparseGradients());
  held.dropHeldSparseGradients();
  EXPECT_FALSE(held.holdsSparseGradients());
  for (auto& p : held.parameters()) p.mutable_grad() = at::Tensor();
  held.forward(b.center.narrow(0, 8, 4), b.context.narrow(0, 8, 4), b.negatives.narrow(0, 8, 4)).backward();
  EXPECT_EQ(held.inputEmbedding().grad()._nnz(), 4) << "dropping also stopped the holding";
}

TEST(SgnsModel, HeldSparseRowsAreHandedOverAsAutogradWouldSumThem) {
  expectHeldRowsMatchAutogradSums(24);
  expectHeldRowsMatchAutogradSums(0);
}

TEST(SgnsModel, ZeroOutputInitStillLearnsThroughTheTower) {
  SgnsOptions o = options(100, 8, 16, true);
  o.zero_output_init = true;
  SgnsModel m(o, 5);
  EXPECT_EQ(m.outputEmbedding().abs().sum().item<double>(), 0.0);
  const Batch b = randomBatch(100, 20, 3, 4);
  const at::Tensor l0 = m.forward(b.center, b.context, b.negatives);
  EXPECT_NEAR(l0.item<double>(), 4 * std::log(2.0), 1e-6);  // every score is 0
  l0.backward();
  EXPECT_GT(dense(m.outputEmbedding().grad()).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(dense(m.inputEmbedding().grad()).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(m.named_parameters()["tower_w2"].grad().abs().sum().item<double>(), 0.0);
  {
    at::NoGradGuard g;
    m.outputEmbedding().add_(dense(m.outputEmbedding().grad()), -0.5);
  }
  for (auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
  m.forward(b.center, b.context, b.negatives).backward();
  EXPECT_GT(dense(m.inputEmbedding().grad()).abs().sum().item<double>(), 0.0);
  EXPECT_GT(m.named_parameters()["tower_w1"].grad().abs().sum().item<double>(), 0.0);
}

TEST(SgnsModel, GradOutputScalesGradients) {
  SgnsModel a(options(30, 4, 6, true), 2), b(options(30, 4, 6, true), 2);
  const Batch x = randomBatch(30, 10, 2, 9);
  a.forward(x.center, x.context, x.negatives).backward();
  (b.forward(x.center, x.context, x.negatives) * 3.0).backward();
  for (const auto& p : a.named_parameters()) {
    EXPECT_TRUE(at::allclose(dense(p.value().grad()) * 3.0, dense(b.named_parameters()[p.key()].grad()), 1e-4, 1e-6))
        << p.key();
  }
}

TEST(SgnsModel, DeterministicFromSeed) {
  SgnsModel a(options(40, 4, 8, true), 11), b(options(40, 4, 8, true), 11), c(options(40, 4, 8, true), 12);
  for (const auto& p : a.named_parameters()) {
    EXPECT_TRUE(at::equal(p.value(), b.named_parameters()[p.key()])) << p.key();
  }
  EXPECT_FALSE(at::equal(a.inputEmbedding(), c.inputEmbedding()));
  const double s = 0.5 / 4;
  EXPECT_LE(a.inputEmbedding().abs().max().item<double>(), s);
}

TEST(SgnsModel, OutOfRangeIdsAreADataError) {
  SgnsModel m(options(10, 4, 0, true), 1);
  EXPECT_THROW(m.forward(ids({10}, {1}), ids({0}, {1}), ids({1}, {1, 1})), DataError);
  EXPECT_THROW(m.forward(ids({0}, {1}), ids({-1}, {1}), ids({1}, {1, 1})), DataError);
}

TEST(SgnsModel, QueryVectorsApplyTheTower) {
  SgnsModel m(options(20, 4, 8, true), 3);
  const at::Tensor q = m.queryVectors();
  const auto p = m.named_parameters();
  const at::Tensor expect =
      at::linear(at::relu(at::linear(m.inputEmbedding(), p["tower_w1"], p["tower_b1"])), p["tower_w2"], p["tower_b2"]);
  EXPECT_TRUE(at::allclose(q, expect, 1e-5, 1e-6));
  EXPECT_FALSE(q.requires_grad());
}

TEST(CpuGemm, MatchesMatmulForAllTransposes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{7, 19, 5}, {64, 128, 64}, {33, 16, 1030}, {1, 1, 1}}) {
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        const at::Tensor a = ta ? at::randn({k, m}, gen) : at::randn({m, k}, gen);
        const at::Tensor b = tb ? at::randn({n, k}, gen) : at::randn({k, n}, gen);
        const at::Tensor expect = at::mm(ta ? a.t() : a, tb ? b.t() : b);
        at::Tensor c = at::full({m, n}, std::nanf(""));
        detail::gemm(a, ta, b, tb, c, 0.0f);
        EXPECT_TRUE(at::allclose(c, expect, 1e-4, 1e-4)) << m << "x" << n << "x" << k << " " << ta << tb;
        at::Tensor c2 = at::ones({m, n});
        detail::gemm(a, ta, b, tb, c2, 1.0f);
        EXPECT_TRUE(at::allclose(c2, expect + 1, 1e-4, 1e-4));
      }
    }
  }
}

}  // namespace
}  // namespace ringtrain::model

#include "model/row_ops.h"

namespace ringtrain::model {
namespace {

TEST(RowOps, CoalesceRowsMatchesCoalesceAndIndexAddMatchesIndexAdd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor idx = at::randint(0, 20, {1, 200}, gen);
  const at::Tensor vals = at::randn({200, 3}, gen);
  const at::Tensor g = at::sparse_coo_tensor(idx, vals, {20, 3});
  const at::Tensor ours = detail::coalesceRows(g);
  const at::Tensor theirs = g.coalesce();
  EXPECT_TRUE(ours.is_coalesced());
  EXPECT_TRUE(at::equal(ours._indices(), theirs._indices()));
  EXPECT_TRUE(at::allclose(ours._values(), theirs._values(), 1e-5, 1e-6));
  at::Tensor a = at::randn({20, 3}, gen);
  at::Tensor b = a.clone();
  detail::indexAddRows(a, idx[0], vals, -0.5);
  b.index_add_(0, idx[0], vals, -0.5);
  EXPECT_TRUE(at::allclose(a, b, 1e-5, 1e-6));
  EXPECT_THROW(detail::indexAddRows(a, at::tensor({20}, at::kLong), at::ones({1, 3}), 1.0), Error);
}

}  // namespace
}  // namespace ringtrain::model
