// The GPU benchmark's program (bench/sgns_gpu.cc) on the CPU, so CI runs it too: its figure, its phase
// breakdown and the DDP variant (Gloo at world size 1 here; NCCL on a GPU), in the format
// scripts/bench-gpu.sh reads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/command.h"

namespace ringtrain {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

testing::CommandResult runSgnsBench(std::vector<std::string> extra) {
  std::vector<std::string> argv = {testing::binPath("sgns_gpu"), "--device", "cpu", "--items", "2000", "--dim", "16",
                                   "--batch", "64", "--negatives", "3", "--steps", "20", "--warmup", "2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  testing::CommandOptions options;
  options.timeout = std::chrono::seconds(60);
  return testing::runCommand(argv, options);
}

TEST(BenchSgnsGpu, OnTheCpuPrintsItsRateAndWhereAStepGoes) {
  const auto r = runSgnsBench({"--phases"});
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  // bench-gpu.sh takes the number before "M pairs/s".
  EXPECT_THAT(r.out, ContainsRegex("ddp=off step=aten: [0-9]+ steps/s, [0-9.]+ M pairs/s \\(loss [0-9.]+\\) on cpu"));
  EXPECT_THAT(r.out, ContainsRegex("phases, us per step \\(host, as issued\\): randint [0-9.]+ forward [0-9.]+ "
                                   "backward [0-9.]+ finalize [0-9.]+ optimizer [0-9.]+ zero_grad [0-9.]+ \\| total"));
  EXPECT_THAT(r.out, HasSubstr("phases, us per step (each phase waited for):"));
}

TEST(BenchSgnsGpu, WrapsTheModelInDdp) {
  const auto r = runSgnsBench({"--ddp"});
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.out, ContainsRegex("ddp=gloo step=aten: .* M pairs/s"));
}

}  // namespace
}  // namespace ringtrain
