// scripts/trace-summary.py on traces written by TraceWriter, the way the trainer names a step's phases.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "testing/command.h"
#include "train/run_log.h"

namespace ringtrain::train {
namespace {

using Clock = std::chrono::steady_clock;
using Micros = std::chrono::microseconds;

// One step of a rank: its passes (name, begin, end in us from the step's start), then finalize, optimizer
// and zero grad as the trainer traces them.
struct Pass {
  std::string name;
  int begin_us;
  int end_us;
  int cpu = -1;  // recorded in its args when >= 0, as the trainer does
};

void traceStep(TraceWriter& trace, Clock::time_point step, const std::vector<Pass>& passes, int finalize_end_us) {
  trace.span("data wait", step, step + Micros(100));
  for (const Pass& p : passes) {
    trace.span(p.name, step + Micros(p.begin_us), step + Micros(p.end_us),
               p.cpu >= 0 ? "{\"cpu\":" + std::to_string(p.cpu) + "}" : "{}");
  }
  const int last = passes.back().end_us;
  trace.span("finalize: wait for buckets + sparse sync", step + Micros(last), step + Micros(finalize_end_us),
             R"({"sparse_sync_ms":0.2,"sparse_exchange_ms":0.1,"sparse_overlapped_ms":0.05})");
  trace.span("optimizer step", step + Micros(finalize_end_us), step + Micros(finalize_end_us + 200));
  trace.span("zero grad", step + Micros(finalize_end_us + 200), step + Micros(finalize_end_us + 250));
}

std::string summarize(const std::string& events_json) {
  const std::string dir = testing::makeTempDir("trace-summary-test");
  const std::string path = dir + "/trace.json";
  std::ofstream(path) << "{\"traceEvents\":[" << events_json << "]}";
  const testing::CommandResult r =
      testing::runCommand({"python3", testing::sourcePath("scripts/trace-summary.py"), path, "--skip", "2"});
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(r.ok()) << r.err;
  return r.out;
}

// The row of `label`: its per-rank figures, as printed.
std::string row(const std::string& out, const std::string& label) {
  const size_t at = out.find(label);
  if (at == std::string::npos) return "(no row '" + label + "' in:\n" + out + ")";
  const size_t end = out.find('\n', at);
  std::string line = out.substr(at + label.size(), end - at - label.size());
  line = std::regex_replace(line, std::regex("^\\s+|\\s+$"), "");
  return std::regex_replace(line, std::regex("\\s+"), " ");
}

// Under ddp.steal a step's forward+backward is several passes, each named for the piece it ran. The summary
// reads them as the step's one forward+backward (first begin to last end), says how long went to other ranks'
// pairs, and finds who arrived last from the merged spans.
TEST(TraceSummary, StolenPiecesMakeOneForwardBackwardPerStep) {
  TraceWriter rank0(0), rank1(1);
  const auto start = Clock::now();
  for (int k = 0; k < 6; ++k) {
    const auto step = start + Micros(10000 * k);
    // Rank 0 trains its own 768 pairs, then 256 of rank 1's; rank 1 only its own 768, slower.
    traceStep(rank0, step,
              {{"forward+backward (768 pairs of rank 0's batch)", 100, 3100, 3},
               {"forward+backward (256 pairs of rank 1's batch, buckets in flight)", 3100, 4100, 3}},
              4500);
    // Rank 1 moves to CPU 6 for its last step: CPU 5 in 3 of the 4 steps after the 2 skipped.
    traceStep(rank1, step,
              {{"forward+backward (768 pairs of rank 1's batch, buckets in flight)", 100, 4000, k == 5 ? 6 : 5}}, 4500);
  }
  const std::string out = summarize(rank0.eventsJson() + ",\n" + rank1.eventsJson());
  EXPECT_EQ(row(out, "forward+backward (buckets in flight)"), "4.00 3.90") << out;
  EXPECT_EQ(row(out, "forward+backward on others' pairs, mean"), "1.00 0.00") << out;
  EXPECT_EQ(row(out, "arrival spread at finalize"), "0.10 ( 0.10)") << out;
  EXPECT_EQ(row(out, "last to arrive, % of steps"), "r0:100") << out;
  EXPECT_EQ(row(out, "forward+backward's CPU, most passes (share)"), "3:100% 5:75%") << out;
  EXPECT_EQ(out.find("768 pairs"), std::string::npos) << "a piece's own row is left:\n" << out;
}

// Stealing in fewer than half the steps still shows: the row is a mean over steps, not a median.
TEST(TraceSummary, StealingInAFewStepsShowsInTheMean) {
  TraceWriter rank0(0), rank1(1);
  const auto start = Clock::now();
  for (int k = 0; k < 6; ++k) {
    const auto step = start + Micros(10000 * k);
    std::vector<Pass> passes = {{"forward+backward (1024 pairs of rank 0's batch, buckets in flight)", 100, 3100}};
    if (k == 4) {  // one of the 4 steps kept: rank 0 also trains 256 of rank 1's pairs, for 1 ms
      passes = {{"forward+backward (1024 pairs of rank 0's batch)", 100, 3100},
                {"forward+backward (256 pairs of rank 1's batch, buckets in flight)", 3100, 4100}};
    }
    traceStep(rank0, step, passes, 4500);
    traceStep(rank1, step, {{"forward+backward (768 pairs of rank 1's batch, buckets in flight)", 100, 4000}}, 4500);
  }
  const std::string out = summarize(rank0.eventsJson() + ",\n" + rank1.eventsJson());
  EXPECT_EQ(row(out, "forward+backward on others' pairs, mean"), "0.25 0.00") << out;
}

// A rank that found every row of a step taken runs one pair weighted zero: that pass is the step's
// forward+backward too.
TEST(TraceSummary, AZeroWeightedPassIsTheStepsForwardBackward) {
  TraceWriter rank0(0), rank1(1);
  const auto start = Clock::now();
  for (int k = 0; k < 5; ++k) {
    const auto step = start + Micros(10000 * k);
    traceStep(rank0, step, {{"forward+backward (1024 pairs of rank 0's batch, buckets in flight)", 100, 3000}}, 3300);
    traceStep(rank1, step, {{"forward+backward (a pair weighted zero, buckets in flight)", 100, 300}}, 3300);
  }
  const std::string out = summarize(rank0.eventsJson() + ",\n" + rank1.eventsJson());
  EXPECT_EQ(row(out, "forward+backward (buckets in flight)"), "2.90 0.20") << out;
  EXPECT_EQ(row(out, "forward+backward on others' pairs, mean"), "0.00 0.00") << out;
  EXPECT_EQ(row(out, "last to arrive, % of steps"), "r0:100") << out;
  EXPECT_EQ(out.find("CPU"), std::string::npos) << "a CPU row for a trace that records none:\n" << out;
}

}  // namespace
}  // namespace ringtrain::train
