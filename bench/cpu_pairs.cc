// Which CPUs slow each other down: every pair of the CPUs this process may use runs the same arithmetic at
// once, each thread pinned to its CPU, against the rate each CPU reaches alone. Two hardware threads of one
// core share its execution units and run well under their lone rate together; a virtual machine's vCPUs
// can be such threads on the host while the guest's topology says one thread per core, so only a
// measurement finds them. Prints the matrix, the pairs found, and an order of the CPUs with each pair side
// by side, for `ringrun --bind-to cores --cpus ORDER` (each rank's slice then holds whole host cores).
//   build/bin/cpu_pairs [--ms 30] [--passes 2] [--below 0.8]
// On the dev machine (2 vCPUs) it measures one pair.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/cpu_list.h"

namespace {

using Clock = std::chrono::steady_clock;

// Independent multiply-add chains, more than a core's arithmetic units can overlap: one thread alone keeps
// them busy, so a second thread on the same core halves both. Written with vector types and kept in
// registers by hand (asm barriers), so that no compiler's choice turns it into a loop that waits on memory
// or on one chain, which a sibling thread would hardly slow.
using Vec = double __attribute__((vector_size(16)));  // 2 doubles: one SSE2 register, on any x86-64
constexpr int kChains = 12;                             // 12 of the 16 registers: the constants fit beside
constexpr double kFlopsPerRound = 256.0 * kChains * 2 * 2;
std::atomic<double> g_sink{0};

uint64_t spin(const std::atomic<bool>& stop) {
  Vec acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = Vec{1.0, 2.0} + i;
  const Vec mul = {0.9999999, 0.9999999}, add = {1e-7, 1e-7};
  uint64_t rounds = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    for (int k = 0; k < 256; ++k) {
      for (Vec& a : acc) a = a * mul + add;
    }
    for (Vec& a : acc) asm volatile("" : "+x"(a));  // the values stay live and in registers
    ++rounds;
  }
  double sum = 0;
  for (const Vec& a : acc) sum += a[0] + a[1];
  g_sink.store(sum, std::memory_order_relaxed);
  return rounds;
}

bool pinSelf(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::pthread_setaffinity_np(::pthread_self(), sizeof(set), &set) == 0;
}

// Rounds per millisecond of each CPU in `cpus`, all running at once for `ms`.
std::vector<double> ratesTogether(const std::vector<int>& cpus, int ms) {
  std::atomic<bool> go{false}, stop{false};
  std::atomic<int> ready{0};
  std::vector<uint64_t> rounds(cpus.size(), 0);
  std::vector<double> elapsed_ms(cpus.size(), 1.0);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cpus.size(); ++i) {
    threads.emplace_back([&, i] {
      if (!pinSelf(cpus[i])) std::fprintf(stderr, "cpu_pairs: cannot pin a thread to CPU %d\n", cpus[i]);
      ready.fetch_add(1);
      while (!go.load()) {
      }
      const auto start = Clock::now();
      rounds[i] = spin(stop);
      elapsed_ms[i] = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    });
  }
  while (ready.load() < static_cast<int>(cpus.size())) std::this_thread::yield();
  go.store(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  stop.store(true);
  for (auto& t : threads) t.join();
  std::vector<double> rates;
  for (size_t i = 0; i < cpus.size(); ++i) rates.push_back(static_cast<double>(rounds[i]) / elapsed_ms[i]);
  return rates;
}

}  // namespace

int main(int argc, char** argv) {
  int ms = 30, passes = 2;
  double below = 0.8;
  CLI::App app{"Which CPUs slow each other down (hardware threads of one core, also where a VM hides them)"};
  app.add_option("--ms", ms, "milliseconds per measurement")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--passes", passes, "measurements per CPU and per pair; the best one counts")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--below", below, "a pair whose threads run under this share of their lone rate together is a core's two threads")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!(below > 0.0 && below <= 1.0)) {  // NaN passes CLI11's range check
    std::fprintf(stderr, "cpu_pairs: --below %g: give a share in (0, 1], such as 0.8\n", below);
    return 2;
  }

  // The main thread only sleeps while the pinned ones run; it must not hold a measured CPU busy meanwhile.
  const std::vector<int> cpus = ringtrain::allowedCpus();
  const int n = static_cast<int>(cpus.size());
  if (n < 2) {
    std::printf("cpu_pairs: %d CPU(s) allowed (%s): no pair to measure\norder: %s\n", n,
                ringtrain::cpuListText(cpus).c_str(), ringtrain::cpuListText(cpus).c_str());
    return 0;
  }
  std::printf("cpu_pairs: %d CPUs (%s), %d ms per measurement, best of %d\n", n, ringtrain::cpuListText(cpus).c_str(),
              ms, passes);

  // A CPU's lone rate is its best over the passes: a neighbour elsewhere on the host can only slow it.
  std::vector<double> alone(n, 0.0);
  for (int p = 0; p < passes; ++p) {
    for (int i = 0; i < n; ++i) alone[i] = std::max(alone[i], ratesTogether({cpus[i]}, ms)[0]);
  }
  // together[i][j]: the share of its lone rate the slower of CPUs i and j kept while both ran.
  std::vector<std::vector<double>> together(n, std::vector<double>(n, 1.0));
  for (int p = 0; p < passes; ++p) {
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) {
        const std::vector<double> rates = ratesTogether({cpus[i], cpus[j]}, ms);
        const double kept = std::min(rates[0] / alone[i], rates[1] / alone[j]);
        together[i][j] = together[j][i] = p == 0 ? kept : std::max(together[i][j], kept);
      }
    }
  }

  // In GFLOP/s: a few to tens where the loop runs as meant; far below, something else bounds it (say so).
  std::printf("lone rate (GFLOP/s):");
  for (int i = 0; i < n; ++i) std::printf(" %d:%.1f", cpus[i], alone[i] * kFlopsPerRound / 1e6);
  std::printf("\nshare of the lone rate kept with the other CPU busy (%%), row CPU against column CPU:\n     ");
  for (int j = 0; j < n; ++j) std::printf("%4d", cpus[j]);
  std::printf("\n");
  for (int i = 0; i < n; ++i) {
    std::printf("%4d ", cpus[i]);
    for (int j = 0; j < n; ++j) {
      if (i == j) {
        std::printf("   .");
      } else {
        std::printf("%4.0f", 100.0 * together[i][j]);
      }
    }
    std::printf("\n");
  }

  // A pair counts when each is the other's worst partner and both fell under `below`: the two threads of
  // one core. Anything else (a CPU slowed by several others alike) is noise or memory traffic, not a core.
  std::vector<int> partner(n, -1);
  for (int i = 0; i < n; ++i) {
    int worst = -1;
    for (int j = 0; j < n; ++j) {
      if (j != i && (worst < 0 || together[i][j] < together[i][worst])) worst = j;
    }
    partner[i] = worst;
  }
  std::vector<int> order;
  std::vector<bool> placed(n, false);
  std::string pairs_text;
  for (int i = 0; i < n; ++i) {
    const int j = partner[i];
    if (placed[i] || j < 0 || partner[j] != i || together[i][j] >= below || placed[j]) continue;
    order.push_back(cpus[i]);
    order.push_back(cpus[j]);
    placed[i] = placed[j] = true;
    pairs_text += " " + std::to_string(cpus[i]) + "+" + std::to_string(cpus[j]);
  }
  for (int i = 0; i < n; ++i) {
    if (!placed[i]) order.push_back(cpus[i]);
  }
  std::printf("pairs under %g%% together:%s\n", 100.0 * below, pairs_text.empty() ? " none" : pairs_text.c_str());
  // Listed one by one, not as cpuListText's ranges: this order is for reading and for --cpus alike.
  std::string order_text;
  for (int c : order) order_text += (order_text.empty() ? "" : ",") + std::to_string(c);
  std::printf("order: %s\n", order_text.c_str());
  return 0;
}
