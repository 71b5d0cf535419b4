// Steps/s and pairs/s of one SGNS training step (forward + backward + optimizer) on the reference workload
// of ../shared/BENCHMARKS.md section 2: 100,000 items x 64 dims, tower 64 -> 128 -> 64, 1,024 pairs,
// 5 negatives, SGD lr 0.05, sparse gradients, 1 intra-op thread; synthetic pairs drawn before timing as
// ddp_peer.py draws them; 5 warm-up steps, 50 timed. scripts/bench-step.sh runs it beside the PyTorch peer.
// --chunks N splits each step into N forward+backward passes (as ddp.steal and ddp.accumulation_steps run);
// --compare-sums R then alternates the model's held sparse rows with autograd's own sums, R rounds of each.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include "ringtrain/core/allocator.h"
#include "ringtrain/model/sgns_model.h"
#include "ringtrain/train/optimizer.h"

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // as the ringtrain executable does: see the header
  CLI::App app{"SGNS training-step microbenchmark"};
  int64_t items = 100000, batch = 1024, steps = 50, warmup = 5;
  int dim = 64, hidden = 128, negatives = 5, threads = 1;
  double lr = 0.05;
  bool dense = false, reference = false, autograd_sums = false;
  int64_t chunks = 1;
  int compare_sums = 0;
  std::string optim = "sgd";
  app.add_option("--num-items", items);
  app.add_option("--dim", dim);
  app.add_option("--hidden", hidden, "tower hidden width; 0: no tower");
  app.add_option("--batch", batch);
  app.add_option("--negatives", negatives);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--lr", lr);
  app.add_option("--threads", threads);
  app.add_option("--optim", optim, "sgd | adagrad | adam");
  app.add_flag("--dense", dense, "dense embedding gradients");
  app.add_flag("--reference", reference, "use the eager ATen/autograd composition (forwardReference)");
  app.add_option("--chunks", chunks, "forward+backward passes per step, each on a piece of the batch (what "
                 "ddp.steal and ddp.accumulation_steps run); the step's loss weighted as one batch's")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_flag("--autograd-sums", autograd_sums, "with --chunks: let autograd add each pass's sparse gradients "
               "to the last, instead of the model's holdSparseGradients()");
  app.add_option("--compare-sums", compare_sums, "with --chunks: R alternating rounds of held rows against "
                 "autograd's sums, then both means and their ratio")
      ->check(CLI::Range(0, 1000));
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(threads);

  using namespace ringtrain;
  const int64_t total = warmup + steps;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  const at::Tensor u = at::rand({total, batch}, gen);
  const at::Tensor center = (at::pow(static_cast<double>(items), u) - 1).to(at::kLong).clamp_(0, items - 1);
  const at::Tensor ctx = (center + at::randint(-5, 6, {total, batch}, gen)).remainder_(items);
  const at::Tensor neg = at::randint(0, items, {total, batch, negatives}, gen);

  // One run of warmup + steps steps on a fresh model; prints its line and returns its pairs/s.
  auto run = [&](bool sums_by_autograd) {
    model::SgnsOptions mo;
    mo.vocab_size = items;
    mo.dim = dim;
    mo.tower_hidden = hidden;
    mo.sparse = !dense;
    mo.zero_output_init = false;  // as the peer
    model::SgnsModel model(mo, 0);
    config::OptimOptions oo;
    oo.name = optim;
    oo.lr = lr;
    std::vector<std::pair<std::string, at::Tensor>> params;
    for (const auto& p : model.named_parameters()) params.emplace_back(p.key(), p.value());
    auto opt = train::makeOptimizer(params, oo);

    std::vector<double> times;
    double t_fwd = 0, t_bwd = 0, t_opt = 0;  // summed over the timed steps
    double first_loss = 0, last_loss = 0;
    for (int64_t s = 0; s < total; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      opt->zeroGrad();
      // Passes of forward, then backward; the forwards' times and the backwards' are summed apart.
      std::chrono::steady_clock::duration forward{0}, backward{0};
      at::Tensor loss;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t from = batch * c / chunks, n = batch * (c + 1) / chunks - from;
        if (n == 0) continue;
        const auto f0 = std::chrono::steady_clock::now();
        const at::Tensor cs = center[s].narrow(0, from, n), xs = ctx[s].narrow(0, from, n),
                         ns = neg[s].narrow(0, from, n);
        at::Tensor part = reference ? model.forwardReference(cs, xs, ns) : model.forward(cs, xs, ns);
        if (chunks > 1) part = part * (static_cast<double>(n) / static_cast<double>(batch));
        const auto f1 = std::chrono::steady_clock::now();
        forward += f1 - f0;
        model.holdSparseGradients(!sums_by_autograd && c + 1 < chunks);
        part.backward();
        backward += std::chrono::steady_clock::now() - f1;
        loss = loss.defined() ? loss + part.detach() : part.detach();
      }
      const auto o0 = std::chrono::steady_clock::now();
      opt->step();
      const auto o1 = std::chrono::steady_clock::now();
      times.push_back(std::chrono::duration<double>(o1 - t0).count());
      if (s >= warmup) {
        t_fwd += std::chrono::duration<double>(forward).count();
        t_bwd += std::chrono::duration<double>(backward).count();
        t_opt += std::chrono::duration<double>(o1 - o0).count();
      }
      last_loss = loss.item<double>();
      if (s == 0) first_loss = last_loss;
    }
    std::vector<double> timed(times.begin() + warmup, times.end());
    double sum = 0;
    for (double t : timed) sum += t;
    std::sort(timed.begin(), timed.end());
    std::printf("ringtrain sgns_step: %.0f pairs/s  %.1f steps/s  step_mean=%.2fms step_median=%.2fms loss "
                "%.4f->%.4f threads=%d sparse=%d optim=%s path=%s chunks=%lld%s\n",
                steps * batch / sum, steps / sum, sum / steps * 1e3, timed[timed.size() / 2] * 1e3, first_loss,
                last_loss, at::get_num_threads(), dense ? 0 : 1, optim.c_str(), reference ? "reference" : "fused",
                static_cast<long long>(chunks), chunks > 1 && sums_by_autograd ? " (autograd's sums)" : "");
    std::printf("  per step: forward %.2fms  backward %.2fms  optimizer %.2fms\n", t_fwd / steps * 1e3,
                t_bwd / steps * 1e3, t_opt / steps * 1e3);
    std::fflush(stdout);
    return steps * batch / sum;
  };

  if (compare_sums == 0) {
    run(autograd_sums);
    return 0;
  }
  // Held rows against autograd's sums, alternating (a shared machine drifts: neighbours compare).
  std::vector<double> held, summed;
  for (int round = 0; round < compare_sums; ++round) {
    held.push_back(run(false));
    summed.push_back(run(true));
  }
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / static_cast<double>(v.size());
  };
  std::printf("sgns_step --chunks %lld over %d alternating rounds: held rows %.0f pairs/s, autograd's sums %.0f "
              "pairs/s (mean), held / sums %.3fx\n",
              static_cast<long long>(chunks), compare_sums, mean(held), mean(summed), mean(held) / mean(summed));
  return 0;
}
