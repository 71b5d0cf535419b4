// The GPU workload of ../shared/BENCHMARKS.md section 3, as ringtrain trains it: SGNS without a tower,
// sparse row gradients from SgnsModel's hand-written backward, ringtrain's sparse SGD, and (with --ddp)
// the DistributedDataParallel synchronizer over NCCL at world size 1, on random pairs drawn on the device
// like the PyTorch peer (sgns_gpu_peer.py) draws them. Prints steps/s and pairs/s in the peer's format.
// The model runs ringtrain's CUDA kernels where the build has them; --aten runs its ATen formulation instead.
//   bench/sgns_gpu --items 1000000 --dim 128 --batch 8192 --negatives 5 --steps 200 [--ddp] [--aten] [--phases]
// Runs on CPU too (--device cpu, small sizes) so that it is built and exercised without a GPU.
#include <chrono>
#include <cstdio>
#include <memory>

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>

#include "ringtrain/build_config.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/config/config.h"
#include "ringtrain/core/allocator.h"
#include "ringtrain/ddp/distributed_data_parallel.h"
#include "ringtrain/dist/memory_store.h"
#include "ringtrain/dist/process_info.h"
#include "ringtrain/model/sgns_model.h"
#include "ringtrain/train/optimizer.h"

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // as the ringtrain executable does: see the header
  using namespace ringtrain;
  CLI::App app{"SGNS GPU workload: ringtrain's training step"};
  int64_t items = 1000000, steps = 200, warmup = 20;
  int dim = 128, batch = 8192, negatives = 5;
  bool use_ddp = false, aten = false, phases = false;
  std::string device_name = "cuda";
  app.add_option("--items", items);
  app.add_option("--dim", dim);
  app.add_option("--batch", batch);
  app.add_option("--negatives", negatives);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--device", device_name)->check(CLI::IsMember({"cuda", "cpu"}));
  app.add_flag("--ddp", use_ddp, "wrap the model in DistributedDataParallel (world size 1)");
  app.add_flag("--aten", aten, "the model's ATen formulation instead of ringtrain's CUDA kernels");
  app.add_flag("--phases", phases, "afterwards, time each phase of a step (host as issued, then waited for)");
  CLI11_PARSE(app, argc, argv);
  if (device_name == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "sgns_gpu: no CUDA device; use --device cpu\n");
    return 2;
  }
  const at::Device device = device_name == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);

  model::SgnsOptions options;
  options.vocab_size = items;
  options.dim = dim;
  options.sparse = true;
  options.zero_output_init = false;  // as the peer: both tables uniform
  options.device_kernels = !aten;
  auto sgns = std::make_shared<model::SgnsModel>(options, 0);
  sgns->to(device);
  config::OptimOptions optim;
  optim.name = "sgd";
  optim.lr = 0.05;
  train::NamedTensors params;
  for (const auto& p : sgns->named_parameters()) params.emplace_back(p.key(), p.value());
  auto optimizer = train::makeOptimizer(params, optim);

  dist::MemoryStore store;
  std::unique_ptr<comm::Communicator> communicator;
  std::unique_ptr<ddp::DistributedDataParallel> synchronizer;
  if (use_ddp) {
    config::CommOptions comm_options;
    comm::Device comm_device;
    if (device.is_cuda()) comm_device.cuda_index = 0;
    communicator = comm::makeCommunicator(comm_options, dist::ProcessInfo{}, store, comm_device);
    ddp::DdpOptions ddp_options;
    ddp_options.sparse_parameters = sgns->sparseParameterNames();
    synchronizer = std::make_unique<ddp::DistributedDataParallel>(*sgns, *communicator, ddp_options);
  }

  const auto ids = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor loss;
  // One step in phases; `mark` is called after each (see --phases).
  auto phasedStep = [&](auto&& mark) {
    const at::Tensor center = at::randint(items, {batch}, ids);
    const at::Tensor context = at::randint(items, {batch}, ids);
    const at::Tensor negative = at::randint(items, {batch, negatives}, ids);
    mark(0);
    loss = sgns->forward(center, context, negative);
    mark(1);
    loss.backward();
    mark(2);
    if (synchronizer) synchronizer->finalize();
    mark(3);
    optimizer->step();
    mark(4);
    optimizer->zeroGrad();
    mark(5);
  };
  auto step = [&] { phasedStep([](int) {}); };
  for (int64_t i = 0; i < warmup; ++i) step();
  (void)loss.item<float>();  // waits for the device
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const float last = loss.item<float>();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool kernels = RINGTRAIN_HAVE_CUDA_KERNELS && device.is_cuda() && !aten;
  std::printf("ringtrain items=%lld dim=%d batch=%d negatives=%d sparse=True ddp=%s step=%s: %.0f steps/s, "
              "%.2f M pairs/s (loss %.4f) on %s\n",
              static_cast<long long>(items), dim, batch, negatives,
              communicator ? communicator->backendName().c_str() : "off",
              kernels ? "kernels" : "aten", steps / seconds,
              steps * static_cast<double>(batch) / seconds / 1e6, last, device.str().c_str());
  if (phases) {
    // Where a step's time goes: host time per phase as issued (the device runs behind), then each phase
    // waited for (host + device), over the same number of steps.
    constexpr int kPhases = 6;
    const char* names[kPhases] = {"randint", "forward", "backward", "finalize", "optimizer", "zero_grad"};
    for (const bool synced : {false, true}) {
      double total[kPhases] = {};
      for (int64_t i = 0; i < steps; ++i) {
        auto last_mark = std::chrono::steady_clock::now();
        phasedStep([&](int phase) {
          if (synced && device.is_cuda()) torch::cuda::synchronize();
          const auto now = std::chrono::steady_clock::now();
          total[phase] += std::chrono::duration<double, std::micro>(now - last_mark).count();
          last_mark = now;
        });
      }
      (void)loss.item<float>();
      std::printf("phases, us per step (%s):", synced ? "each phase waited for" : "host, as issued");
      double sum = 0;
      for (int k = 0; k < kPhases; ++k) {
        std::printf(" %s %.1f", names[k], total[k] / steps);
        sum += total[k] / steps;
      }
      std::printf(" | total %.1f\n", sum);
    }
  }
  return 0;
}
