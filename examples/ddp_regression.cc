// A LibTorch program of one's own, trained data-parallel with ringtrain. What it takes is a JobGroup, the
// DistributedDataParallel wrapper, and ddp.finalize() between backward and the optimizer step.
//
//   build/bin/example_ddp_regression [STEPS]                                       # one process
//   build/bin/ringrun --standalone --nproc-per-node 2 -- build/bin/example_ddp_regression
//   mpirun -np 2 build/bin/example_ddp_regression
//
// Every rank fits y = <w, x> + 0.5 with a small MLP, each on batches of its own; finalize() makes every
// gradient the mean over all ranks' batches, so the ranks take the same steps and end with the same
// parameters, which checkReplicas() confirms and the last line of each rank shows. A failure is recorded
// (ringtrain::recordFailure) while the JobGroup's connections stand, so that ringrun names the rank that
// failed first rather than a peer that only lost its connection to it.
// examples/CMakeLists.txt builds this file against an installed ringtrain (find_package).
#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>

#include <torch/torch.h>

#include <ringtrain/comm/job_group.h>
#include <ringtrain/core/allocator.h>
#include <ringtrain/core/error.h>
#include <ringtrain/core/failure_report.h>
#include <ringtrain/ddp/distributed_data_parallel.h>

namespace {

int train(ringtrain::comm::JobGroup& job, int steps) {
  torch::set_num_threads(1);

  torch::manual_seed(0);  // the same start in every run (some LibTorch builds seed the generator at random)
  torch::nn::Sequential model(torch::nn::Linear(16, 64), torch::nn::ReLU(), torch::nn::Linear(64, 1));
  ringtrain::ddp::DistributedDataParallel ddp(*model, job.comm());  // starts from rank 0's parameters
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05));

  const torch::Tensor w = torch::linspace(-1.0, 1.0, 16).unsqueeze(1);
  torch::manual_seed(1 + job.rank());  // each rank draws batches of its own
  float first_loss = 0, last_loss = 0;
  for (int step = 1; step <= steps; ++step) {
    const torch::Tensor x = torch::randn({32, 16});
    const torch::Tensor y = x.matmul(w) + 0.5;
    ddp.zeroGrad();  // one pass per bucket; optimizer.zero_grad() works too (on LibTorch 2.x, a copy per parameter)
    const torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    ddp.finalize();  // the gradients are now the mean over every rank's batch
    optimizer.step();
    last_loss = loss.item<float>();
    if (step == 1) first_loss = last_loss;
    if (job.rank() == 0 && (step == 1 || step % 100 == 0)) std::printf("step %d: loss %.5f\n", step, last_loss);
  }
  ddp.checkReplicas();  // throws, naming the parameter and rank, if any rank's parameters differ

  double checksum = 0;  // the same bits on every rank give the same sum
  for (const torch::Tensor& p : model->parameters()) checksum += p.to(torch::kDouble).sum().item<double>();
  std::printf("rank %d of %d: loss %.5f -> %.5f, parameters' checksum %.17g\n", job.rank(), job.size(),
              first_loss, last_loss, checksum);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // first, before any thread: see ringtrain/core/allocator.h
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a line at a time into ringrun's pipe too: none lost if a rank dies
  int steps = 300;
  if (argc > 1) {  // all of it a number: atoi would read "3x" as 3 and wrap 4294967298 to 2
    const std::string_view text = argv[1];
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), steps);
    if (error != std::errc() || end != text.data() + text.size()) steps = 0;
  }
  if (argc > 2 || steps < 1) {
    std::fprintf(stderr, "usage: %s [STEPS >= 1]\n", argv[0]);
    return 2;
  }
  try {
    ringtrain::comm::JobGroup job;  // rank, world size and where to meet, from the launcher
    try {
      return train(job, steps);
    } catch (const std::exception& e) {
      ringtrain::recordFailure(e);  // while the job's connections stand: ringrun blames the rank that failed first
      throw;
    }
  } catch (const ringtrain::Error& e) {  // a bad setting, a peer that died, a timeout: said, with an exit code
    std::fprintf(stderr, "example_ddp_regression: %s\n", e.what());
    return e.exitCode();
  } catch (const std::exception& e) {  // LibTorch's own (c10::Error), out of memory, ...
    std::fprintf(stderr, "example_ddp_regression: %s\n", e.what());
    return 1;
  }
}
