// DDP synchronizer benchmark.
//  1. World size 1: the same training loop (forward, backward, SGD step) with and without
//     DistributedDataParallel; prints both and the overhead (goal: <= 3%). Runs alternate A/B in rounds and
//     compare medians, because this machine is shared and noisy.
//  2. World size 2 (ranks as threads over an in-process communicator, see --help): how much of the dense
//     buckets' allreduce time is hidden behind backward: hidden = 1 - (finalize wait) / (sum of bucket
//     allreduce durations) (goal: >= 80%).
// Model: an MLP 64 -> H -> H -> H -> 64 (H=1024: ~8.7 MB of float parameters), batch 64, 1 intra-op thread.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "../tests/ddp/thread_group.h"
#include "ringtrain/ddp/distributed_data_parallel.h"

namespace {

using Clock = std::chrono::steady_clock;

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden) {
    l1 = register_module("l1", torch::nn::Linear(64, hidden));
    l2 = register_module("l2", torch::nn::Linear(hidden, hidden));
    l3 = register_module("l3", torch::nn::Linear(hidden, hidden));
    l4 = register_module("l4", torch::nn::Linear(hidden, 64));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(l1(x));
    x = torch::relu(l2(x));
    x = torch::relu(l3(x));
    return l4(x);
  }
  torch::nn::Linear l1{nullptr}, l2{nullptr}, l3{nullptr}, l4{nullptr};
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per step of `steps` steps; ddp may be null.
double runLoop(NetImpl& net, torch::optim::SGD& sgd, ringtrain::ddp::DistributedDataParallel* ddp,
               const torch::Tensor& x, const torch::Tensor& y, int steps) {
  const auto start = Clock::now();
  for (int s = 0; s < steps; ++s) {
    sgd.zero_grad();
    torch::mse_loss(net.forward(x), y).backward();
    if (ddp) ddp->finalize();
    sgd.step();
  }
  return std::chrono::duration<double>(Clock::now() - start).count() / steps;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t hidden = 1024;
  int rounds = 7, steps = 10;
  double bucket_mb = 1.0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : "0"); };
    if (arg == "--hidden") hidden = std::stoll(next());
    else if (arg == "--rounds") rounds = std::stoi(next());
    else if (arg == "--steps") steps = std::stoi(next());
    else if (arg == "--bucket-mb") bucket_mb = std::stod(next());
    else {
      std::printf("usage: ddp_overhead [--hidden H] [--rounds R] [--steps S] [--bucket-mb MB]\n"
                  "2-rank part: ranks are threads of this process over an in-process communicator\n"
                  "(tests/ddp/thread_group.h); its allreduce is a memcpy exchange plus a summing loop.\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  at::set_num_threads(1);
  torch::manual_seed(0);
  const auto x = torch::randn({64, 64});
  const auto y = torch::randn({64, 64});

  // ---- 1. world size 1 ----
  auto plain = std::make_shared<NetImpl>(hidden);
  auto wrapped = std::make_shared<NetImpl>(hidden);
  size_t param_bytes = 0;
  for (auto& p : plain->parameters()) param_bytes += p.numel() * p.element_size();
  ringtrain::testing::ThreadGroup solo(1);
  ringtrain::testing::ThreadCommunicator solo_comm(solo, 0);
  ringtrain::ddp::DdpOptions options;
  options.bucket_cap_mb = bucket_mb;
  ringtrain::ddp::DistributedDataParallel ddp(*wrapped, solo_comm, options);
  torch::optim::SGD sgd_plain(plain->parameters(), torch::optim::SGDOptions(1e-4));
  torch::optim::SGD sgd_ddp(wrapped->parameters(), torch::optim::SGDOptions(1e-4));
  runLoop(*plain, sgd_plain, nullptr, x, y, 3);
  runLoop(*wrapped, sgd_ddp, &ddp, x, y, 3);
  std::vector<double> a, b;
  for (int r = 0; r < rounds; ++r) {
    a.push_back(runLoop(*plain, sgd_plain, nullptr, x, y, steps));
    b.push_back(runLoop(*wrapped, sgd_ddp, &ddp, x, y, steps));
  }
  const double t_plain = median(a), t_ddp = median(b);
  std::printf("model: %.2f MB of float parameters, %zu buckets (cap %.1f MB), batch 64, 1 intra-op thread\n",
              param_bytes / 1e6, ddp.stats().buckets.size(), bucket_mb);
  std::printf("world 1   plain loop %8.3f ms/step   with DDP %8.3f ms/step   overhead %+.2f%% (goal <= 3%%)\n",
              t_plain * 1e3, t_ddp * 1e3, (t_ddp / t_plain - 1) * 100);

  // ---- 2. world size 2, threads ----
  const int world = 2;
  std::vector<std::shared_ptr<NetImpl>> nets;
  for (int r = 0; r < world; ++r) nets.push_back(std::make_shared<NetImpl>(hidden));
  ringtrain::testing::ThreadGroup group(world);
  std::vector<ringtrain::ddp::DdpStats> stats(world);
  std::vector<double> step_time(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ringtrain::testing::ThreadCommunicator comm(group, r);
      ringtrain::ddp::DistributedDataParallel rank_ddp(*nets[r], comm, options);
      torch::optim::SGD sgd(nets[r]->parameters(), torch::optim::SGDOptions(1e-4));
      runLoop(*nets[r], sgd, &rank_ddp, x, y, 3);  // includes the rebuild
      const auto before = rank_ddp.stats();
      step_time[r] = runLoop(*nets[r], sgd, &rank_ddp, x, y, rounds * steps);
      stats[r] = rank_ddp.stats();
      stats[r].sum_allreduce_total -= before.sum_allreduce_total;
      stats[r].sum_finalize_wait -= before.sum_finalize_wait;
      stats[r].steps -= before.steps;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) {
    const double comm_ms = std::chrono::duration<double, std::milli>(stats[r].sum_allreduce_total).count() /
                           stats[r].steps;
    const double wait_ms = std::chrono::duration<double, std::milli>(stats[r].sum_finalize_wait).count() /
                           stats[r].steps;
    std::printf("world 2 rank %d: %8.3f ms/step, bucket allreduce %7.3f ms/step, finalize waited %7.3f ms/step, "
                "hidden %.1f%% (goal >= 80%%)\n",
                r, step_time[r] * 1e3, comm_ms, wait_ms, comm_ms > 0 ? (1 - wait_ms / comm_ms) * 100 : 100.0);
  }
  std::printf("%s", stats[0].toString().c_str());
  return 0;
}
