// The owner's side of the sparse-row sync: summing the blocks every rank sent it, one table, averaged.
// Prints the two ways the sync has, side by side in the same run: merging the sorted blocks and a RowSummer
// followed by an ExactDivider. They give the same bits (checked here too, and in tests/ddp/row_sum_test.cc).
// TableSum (src/ddp/sparse_sync.cc) takes the summer unless the table is over 64 rows per row received and
// rank: the summer's cost also follows the table (a bitmap scan, scattered slots), so `--table` in the
// millions shows merging win.
//   build/bin/row_sum_bench [--rows 4800] [--table 100000] [--width 64] [--reps 300]
// Defaults follow the reference workload: each rank touches about 4,800 distinct rows a step, so an owner
// receives about that many, split over the ranks, skewed towards hot rows (in allgather mode every rank
// receives all of them: try --rows 38400).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>

#include "ddp/row_sum.h"

using namespace ringtrain::ddp::detail;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  int64_t rows = 4800, table = 100000, width = 64;
  int reps = 300;
  CLI::App app{"Summing exchanged sparse rows: merge against RowSummer, same run"};
  app.add_option("--rows", rows, "rows an owner receives per step, over all ranks");
  app.add_option("--table", table, "table rows");
  app.add_option("--width", width, "row width (floats)");
  app.add_option("--reps", reps, "timed repetitions per figure");
  CLI11_PARSE(app, argc, argv);

  std::printf("%6s %10s %10s %14s %14s %8s\n", "ranks", "rows in", "distinct", "merge us", "summer us", "ratio");
  for (int world : {2, 3, 4, 6, 8, 16}) {
    // Rank r's block: ascending distinct ids this owner (rank 0) owns, half from a hot range.
    std::mt19937 rng(world);
    std::uniform_int_distribution<int64_t> hot(0, std::min<int64_t>(2000, table / world - 1));
    std::uniform_int_distribution<int64_t> cold(0, table / world - 1);
    std::vector<std::vector<int64_t>> ids(world);
    std::vector<std::vector<float>> values(world);
    std::vector<RowBlock> blocks;
    size_t received = 0;
    for (int r = 0; r < world; ++r) {
      for (int64_t i = 0; i < rows / world; ++i) ids[r].push_back((i % 2 ? hot(rng) : cold(rng)) * world);
      std::sort(ids[r].begin(), ids[r].end());
      ids[r].erase(std::unique(ids[r].begin(), ids[r].end()), ids[r].end());
      values[r].assign(ids[r].size() * width, 0.25f);
      blocks.push_back({ids[r].data(), values[r].data(), static_cast<int64_t>(ids[r].size())});
      received += ids[r].size();
    }
    std::vector<int64_t> out_ids(received);
    std::vector<float> out(received * width);
    RowSummer summer;
    auto timeMerge = [&] {
      const auto start = Clock::now();
      for (int i = 0; i < reps; ++i) {
        countMerged(blocks, table);
        sumMerged<float>(blocks, width, static_cast<float>(world), out_ids.data(), out.data());
      }
      return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / reps;
    };
    int64_t distinct = 0;
    auto timeSummer = [&] {
      const auto start = Clock::now();
      for (int i = 0; i < reps; ++i) {
        distinct = summer.mark(blocks, table);
        summer.sum<float>(blocks, width, out_ids.data(), out.data());
        ExactDivider<float>(static_cast<float>(world)).apply(out.data(), distinct * width);
      }
      return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / reps;
    };
    // The two ways must agree bit for bit before their times mean anything.
    std::vector<int64_t> merged_ids(received);
    std::vector<float> merged(received * width);
    countMerged(blocks, table);
    sumMerged<float>(blocks, width, static_cast<float>(world), merged_ids.data(), merged.data());
    distinct = summer.mark(blocks, table);
    summer.sum<float>(blocks, width, out_ids.data(), out.data());
    ExactDivider<float>(static_cast<float>(world)).apply(out.data(), distinct * width);
    if (!std::equal(out_ids.begin(), out_ids.begin() + distinct, merged_ids.begin()) ||
        !std::equal(out.begin(), out.begin() + distinct * width, merged.begin())) {
      std::fprintf(stderr, "row_sum_bench: the two ways disagree at %d ranks\n", world);
      return 1;
    }
    // Alternating rounds, each way first in turn, medians: the machine is shared.
    std::vector<double> merge, summed;
    for (int round = 0; round < 5; ++round) {
      if (round % 2 == 0) {
        merge.push_back(timeMerge());
        summed.push_back(timeSummer());
      } else {
        summed.push_back(timeSummer());
        merge.push_back(timeMerge());
      }
    }
    std::sort(merge.begin(), merge.end());
    std::sort(summed.begin(), summed.end());
    std::printf("%6d %10zu %10lld %14.1f %14.1f %7.2fx\n", world, received, static_cast<long long>(distinct), merge[2],
                summed[2], merge[2] / summed[2]);
  }
  return 0;
}
