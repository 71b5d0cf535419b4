// Loader throughput against what the trainer consumes (../shared/BENCHMARKS.md section 2: 100k items,
// 1,024 pairs per rank per step, 5 negatives; PyTorch's single-process SGNS step consumes ~25.2k pairs/s
// there, sparse). Goal: with 2 workers the loader alone makes >= 5x that. Also: the consumer's wait while
// "training" at that pace and at ringtrain's own (--pace, default 300k pairs/s: its 1-rank reference step,
// about 3.4 ms, scripts/bench-step.sh), goal <= 1% of step time; peak RSS and the queue's memory bound.
//
//   loader_bench [--items N] [--sessions N] [--batches N] [--workers N] [--corpus FILE]
//                [--context window|basket] [--eval-fraction F] [--hide-last H] [--pace PAIRS_PER_S]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/batch_loader.h"
#include "ringtrain/data/synthetic.h"

using namespace ringtrain;
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kTrainerPairsPerSecond = 25200.0;  // BENCHMARKS.md section 2, 1 process, sparse

double peakRssMb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // as the ringtrain executable does: see the header
  log::init();
  int64_t items = 100000, sessions = 200000, batches = 400;
  int workers = 2, hide_last = 1;
  double eval_fraction = 0.2;
  double pace = 300000.0;
  std::string corpus_path, context = "window";
  CLI::App app{"loader throughput against the trainer's pace (BENCHMARKS.md section 2)"};
  app.add_option("--items", items, "synthetic items")->capture_default_str();
  app.add_option("--sessions", sessions, "synthetic sessions")->capture_default_str();
  app.add_option("--batches", batches, "batches per measurement")->capture_default_str();
  app.add_option("--workers", workers, "loader threads of the second row")->capture_default_str();
  app.add_option("--corpus", corpus_path, "a corpus file instead of the synthetic one");
  app.add_option("--context", context, "window | basket")->check(CLI::IsMember({"window", "basket"}))
      ->capture_default_str();
  app.add_option("--hide-last", hide_last, "data.eval_hide_last")->capture_default_str();
  app.add_option("--eval-fraction", eval_fraction, "data.eval_fraction")->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--pace", pace, "pairs/s of the second pacing run: ringtrain's own trainer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    config::JobConfig job;
    job.data.batch_size = 1024;
    job.data.negatives = 5;
    job.data.context = context;
    job.data.cache = false;
    job.data.eval_hide_last = hide_last;
    job.data.eval_fraction = eval_fraction;
    job.loader.queue_depth = 8;
    job.run.epochs = 1000;
    std::string tmp;
    auto t0 = Clock::now();
    if (corpus_path.empty()) {
      tmp = (std::filesystem::temp_directory_path() / fmt::format("rt_loader_bench_{}", ::getpid())).string();
      job.synthetic.items = items;
      job.synthetic.categories = 20;
      job.synthetic.sessions = sessions;
      const auto r = data::generateSynthetic(job.synthetic, 1, tmp, /*write_items=*/false);
      corpus_path = r.sequences_path;
      std::cout << fmt::format("synthetic corpus: {} items, {} sessions, {} tokens, generated in {:.2f} s\n", items,
                               r.sessions, r.tokens, seconds(t0));
    }
    job.data.corpus = corpus_path;
    t0 = Clock::now();
    auto corpus = data::Corpus::load(job.data);
    const double load_s = seconds(t0);
    auto split = std::make_shared<const data::CorpusSplit>(*corpus, job.data);
    std::cout << fmt::format("corpus {}: {} lines, {} tokens, vocabulary {}, parsed in {:.2f} s; {} lines feed training ({} held out)\n",
                             corpus_path, corpus->numLines(), corpus->numTokens(), corpus->vocab().size(), load_s,
                             split->trainLines().size(), split->heldOutLines().size());

    std::cout << fmt::format("held-out queries ({} protocol): {}\n", context, data::heldOutQueries(*corpus, *split).size());
    std::cout << fmt::format("\n{:>8} {:>14} {:>12} {:>16} {:>8}\n", "workers", "pairs/s", "ms/batch", "vs trainer 25.2k",
                             "goal");
    for (int w : {0, 1, workers}) {
      job.loader.workers = w;
      t0 = Clock::now();
      data::BatchLoader loader(corpus, split, job, 0, 1);
      const double setup = seconds(t0);
      // Warm-up: let the queue fill once, then time steady-state production.
      for (int i = 0; i < 16; ++i) loader.next();
      t0 = Clock::now();
      for (int64_t i = 0; i < batches; ++i) RT_CHECK(loader.next().has_value(), "loader ended early");
      const double s = seconds(t0);
      const double rate = batches * 1024.0 / s;
      std::cout << fmt::format("{:>8} {:>14.0f} {:>12.3f} {:>15.1f}x {:>8}   (setup {:.2f} s)\n", w, rate,
                               1000.0 * s / batches, rate / kTrainerPairsPerSecond,
                               w == workers ? (rate >= 5 * kTrainerPairsPerSecond ? "ok >=5x" : "MISSED") : "", setup);
    }

    // The consumer's pace: a step of 1,024 pairs at PyTorch's 25.2k pairs/s takes ~40.6 ms; at ringtrain's
    // own ~300k, ~3.4 ms.
    data::LoaderStats st;
    for (const double pairs_per_s : {kTrainerPairsPerSecond, pace}) {
      job.loader.workers = workers;
      data::BatchLoader loader(corpus, split, job, 0, 1);
      const auto step_time = std::chrono::microseconds(static_cast<int64_t>(1024 / pairs_per_s * 1e6));
      loader.next();  // the first batch is always waited for
      const double wait0 = loader.stats().wait_seconds;
      const int steps = std::max(50, static_cast<int>(2.0 / (1024 / pairs_per_s)));  // 2 s of steps at least
      t0 = Clock::now();
      for (int i = 0; i < steps; ++i) {
        std::this_thread::sleep_for(step_time);
        loader.next();
      }
      const double total = seconds(t0);
      const double waited = loader.stats().wait_seconds - wait0;
      st = loader.stats();
      std::cout << fmt::format("{}training pace {:.0f} pairs/s ({:.1f} ms/step, {} steps): waited {:.3f} ms in total = "
                               "{:.3f}% of step time (goal <= 1%)\n",
                               pairs_per_s == kTrainerPairsPerSecond ? "\n" : "", pairs_per_s,
                               step_time.count() / 1000.0, steps, waited * 1000, 100.0 * waited / total);
    }
    std::cout << fmt::format("queue bound: {} batches x {} KiB = {:.2f} MiB; peak RSS {:.1f} MiB\n",
                             st.max_batches_held, st.bytes_per_batch / 1024, st.max_batches_held * st.bytes_per_batch / 1048576.0,
                             peakRssMb());
    if (!tmp.empty()) std::filesystem::remove_all(tmp);
    return 0;
  } catch (const Error& e) {
    std::cerr << "loader_bench: " << e.what() << "\n";
    return e.exitCode();
  }
}
