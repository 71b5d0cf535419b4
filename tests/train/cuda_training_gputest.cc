// The CUDA path of the main job, on a lent GPU (skipped without one): the model's device math against its
// CPU math, and a whole training run with run.device cuda (pinned-memory loader, NCCL at world size 1).
#include <regex>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "ringtrain/model/sgns_model.h"
#include "testing/command.h"

namespace ringtrain {
namespace {

using ::testing::HasSubstr;

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

TEST(CudaTraining, SgnsModelOnTheGpuMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  model::SgnsOptions options;
  options.vocab_size = 500;
  options.dim = 32;
  options.tower_hidden = 48;
  options.zero_output_init = false;
  model::SgnsModel cpu(options, 7);
  model::SgnsModel gpu(options, 7);
  gpu.to(at::Device(at::kCUDA, 0));
  const at::Tensor center = at::randint(500, {64}, at::kLong);
  const at::Tensor context = at::randint(500, {64}, at::kLong);
  const at::Tensor negatives = at::randint(500, {64, 5}, at::kLong);
  at::Tensor cpu_loss = cpu.forward(center, context, negatives);
  cpu_loss.backward();
  const at::Device cuda(at::kCUDA, 0);
  at::Tensor gpu_loss = gpu.forward(center.to(cuda), context.to(cuda), negatives.to(cuda));
  gpu_loss.backward();
  EXPECT_NEAR(cpu_loss.item<float>(), gpu_loss.item<float>(), 1e-4);
  auto cpu_params = cpu.named_parameters();
  auto gpu_params = gpu.named_parameters();
  for (const auto& p : cpu_params) {
    const at::Tensor a = p.value().grad();
    const at::Tensor b = gpu_params[p.key()].grad();
    ASSERT_EQ(a.defined(), b.defined()) << p.key();
    if (!a.defined()) continue;
    const at::Tensor da = a.is_sparse() ? a.to_dense() : a;
    const at::Tensor db = (b.is_sparse() ? b.to_dense() : b).to(at::kCPU);
    EXPECT_TRUE(at::allclose(da, db, 1e-4, 1e-5)) << p.key();
  }
}

TEST(CudaTraining, TrainJobRunsOnTheGpuOverNccl) {
  SKIP_WITHOUT_CUDA();
  const std::string dir = testing::makeTempDir("ringtrain-cuda-");
  testing::CommandOptions options;
  options.timeout = std::chrono::seconds(180);
  const auto r = testing::runCommand(
      {testing::binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
       "run.device=cuda", "--set", "comm.backend=nccl", "--set", "run.output_dir=" + dir, "--set",
       "synthetic.items=2000", "--set", "synthetic.sessions=4000", "--set", "optim.name=adagrad", "--set",
       "optim.lr=0.2", "--set", "log.plot=false"},
      options);
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("device cuda"));
  std::smatch m;
  const std::string out = r.out;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(HR@10: ([0-9.]+).*popularity baseline HR@10: ([0-9.]+))")))
      << out;
  EXPECT_GT(std::stod(m[1]), std::stod(m[2])) << out;
}

}  // namespace
}  // namespace ringtrain
