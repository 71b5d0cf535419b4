// ringtrain's CUDA kernels for the SGNS step (src/model/sgns_device_kernels.cu), on a lent GPU: the kernels
// against the same math in ATen ops, directly and through the model's forward/backward and an SGD step.
// Skipped without a CUDA device, and where this build has no kernels (LibTorch without CUDA, or no nvcc).
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "ringtrain/build_config.h"
#include "ringtrain/model/sgns_model.h"
#if RINGTRAIN_HAVE_CUDA_KERNELS
#include "model/sgns_device_ops.h"
#endif

namespace ringtrain::model {
namespace {

#define SKIP_WITHOUT_KERNELS()                                                      \
  if (!RINGTRAIN_HAVE_CUDA_KERNELS) GTEST_SKIP() << "this build has no CUDA kernels"; \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

const at::Device kCuda(at::kCUDA, 0);

at::Tensor dense(const at::Tensor& g) { return (g.is_sparse() ? g.to_dense() : g).to(at::kCPU); }

struct Batch {
  at::Tensor center, context, negatives;
};

Batch randomBatch(int64_t vocab, int64_t batch, int64_t negatives) {
  const auto ids = at::TensorOptions().dtype(at::kLong).device(kCuda);
  return {at::randint(vocab, {batch}, ids), at::randint(vocab, {batch}, ids),
          at::randint(vocab, {batch, negatives}, ids)};
}

#if RINGTRAIN_HAVE_CUDA_KERNELS
// The kernels' outputs against ATen on the same rows: dims 128 and 64 take the float4 path, 30 the scalar
// one; batch 13 leaves a block partly empty.
TEST(SgnsDeviceKernels, ScoreAndBackwardMatchAtenOps) {
  SKIP_WITHOUT_KERNELS();
  for (const int dim : {128, 64, 30}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t vocab = 300, batch = 13, negatives = 5;
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
    const at::Tensor in_w = at::randn({vocab, dim}, f32) * 0.3;
    const at::Tensor out_w = at::randn({vocab, dim}, f32) * 0.3;
    const Batch b = randomBatch(vocab, batch, negatives);
    const at::Tensor ids = at::cat({b.context.unsqueeze(1), b.negatives}, 1).contiguous();
    ASSERT_TRUE(detail::deviceKernelsApply(in_w, out_w));

    auto [loss, coef] = detail::sgnsDeviceScore(in_w, b.center, out_w, b.context, b.negatives);
    const at::Tensor u = in_w.index_select(0, b.center);
    const at::Tensor rows = out_w.index_select(0, ids.reshape({-1})).view({batch, negatives + 1, dim});
    const at::Tensor s = at::bmm(rows, u.unsqueeze(2)).squeeze(2);
    at::Tensor sign = at::full({negatives + 1}, -1.0, f32);
    sign[0] = 1.0;
    const at::Tensor want_loss = -at::log_sigmoid(s * sign).sum() / batch;
    const at::Tensor want_coef = -sign * at::sigmoid(-s * sign) / batch;
    EXPECT_NEAR(loss.item<float>(), want_loss.item<float>(), 1e-5);
    EXPECT_TRUE(at::allclose(coef.cpu(), want_coef.cpu(), 1e-4, 1e-7));

    // A dense query ([batch, dim], the tower's case) gives the same scores as the rows it was gathered from.
    auto [loss_dense, coef_dense] = detail::sgnsDeviceScore(u.contiguous(), at::Tensor(), out_w, b.context, b.negatives);
    EXPECT_TRUE(at::allclose(coef_dense.cpu(), coef.cpu(), 1e-5, 1e-8));

    const at::Tensor grad_output = at::full({}, 2.5, f32);
    const detail::SgnsDeviceGrads g =
        detail::sgnsDeviceBackward(coef, in_w, b.center, out_w, b.context, b.negatives, grad_output);
    const at::Tensor c = coef * 2.5;
    const at::Tensor want_grad_u = at::bmm(c.unsqueeze(1), rows).squeeze(1);
    const at::Tensor want_values = (c.unsqueeze(2) * u.unsqueeze(1)).reshape({batch * (negatives + 1), dim});
    EXPECT_TRUE(at::allclose(g.grad_u.cpu(), want_grad_u.cpu(), 1e-4, 1e-7));
    EXPECT_TRUE(at::allclose(g.out_values.cpu(), want_values.cpu(), 1e-5, 1e-8));
    EXPECT_TRUE(at::equal(g.out_ids.cpu(), ids.reshape({-1}).cpu()));
  }
}

// The row scatter-add the optimizer and dense table gradients use on a GPU, against index_add_, with
// duplicate ids (they add up) and both row paths.
TEST(SgnsDeviceKernels, RowsAxpyMatchesIndexAdd) {
  SKIP_WITHOUT_KERNELS();
  for (const int dim : {128, 30}) {
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
    at::Tensor table = at::randn({40, dim}, f32);
    at::Tensor want = table.clone();
    const at::Tensor idx = at::tensor(std::vector<int64_t>{3, 39, 3, 0, 17, 3}, at::kLong).to(kCuda);
    const at::Tensor rows = at::randn({6, dim}, f32);
    detail::deviceRowsAxpy(table, idx, rows, -0.25);
    want.index_add_(0, idx, rows, -0.25);
    EXPECT_TRUE(at::allclose(table.cpu(), want.cpu(), 1e-5, 1e-6)) << "dim " << dim;
  }
}

TEST(SgnsDeviceKernels, RejectIdsOnAnotherDevice) {
  SKIP_WITHOUT_KERNELS();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
  const at::Tensor table = at::zeros({10, 8}, f32);
  const at::Tensor device_ids = at::zeros({4}, at::TensorOptions().dtype(at::kLong).device(kCuda));
  const at::Tensor host_negatives = at::zeros({4, 2}, at::kLong);
  try {
    detail::sgnsDeviceScore(table, device_ids, table, device_ids, host_negatives);
    FAIL() << "negatives on the host were accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("negative is on cpu"), std::string::npos) << e.what();
  }
}
#endif

// The model with its kernels against the model in ATen ops: loss, every gradient (with and without a tower,
// sparse and dense tables, a loss scaled before backward), and the tables after SGD steps.
TEST(SgnsDeviceKernels, ModelMatchesItsAtenFormulation) {
  SKIP_WITHOUT_KERNELS();
  for (const int hidden : {0, 48}) {
    for (const bool sparse : {true, false}) {
      SCOPED_TRACE("tower " + std::to_string(hidden) + (sparse ? " sparse" : " dense"));
      SgnsOptions options;
      options.vocab_size = 400;
      options.dim = 64;
      options.tower_hidden = hidden;
      options.sparse = sparse;
      options.zero_output_init = false;
      SgnsModel kernels(options, 11);
      options.device_kernels = false;
      SgnsModel aten(options, 11);
      kernels.to(kCuda);
      aten.to(kCuda);
      for (int step = 0; step < 3; ++step) {
        const Batch b = randomBatch(options.vocab_size, 37, 5);
        at::Tensor loss_k = kernels.forward(b.center, b.context, b.negatives);
        at::Tensor loss_a = aten.forward(b.center, b.context, b.negatives);
        EXPECT_NEAR(loss_k.item<float>(), loss_a.item<float>(), 1e-5);
        (loss_k * 1.5).backward();
        (loss_a * 1.5).backward();
        auto params_a = aten.named_parameters();
        for (auto& p : kernels.named_parameters()) {
          at::Tensor pa = params_a[p.key()];
          ASSERT_EQ(p.value().grad().defined(), pa.grad().defined()) << p.key();
          EXPECT_TRUE(at::allclose(dense(p.value().grad()), dense(pa.grad()), 1e-4, 1e-7)) << p.key();
          // SGD, sparse rows adding up as the optimizer's index_add_ does.
          at::NoGradGuard no_grad;
          for (at::Tensor* t : {&p.value(), &pa}) {
            const at::Tensor g = t->grad();
            if (g.is_sparse()) {
              t->index_add_(0, g._indices()[0], g._values(), -0.5);
            } else {
              t->add_(g, -0.5);
            }
            t->mutable_grad() = at::Tensor();
          }
          EXPECT_TRUE(at::allclose(p.value().cpu(), pa.cpu(), 1e-4, 1e-6)) << p.key();
        }
      }
    }
  }
}

}  // namespace
}  // namespace ringtrain::model
