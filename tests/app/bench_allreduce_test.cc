// `ringtrain bench allreduce` end to end in one process (world size 1): the front end execs allreduce_bench,
// which prints one checked row per size; bad arguments exit 2 with a message.
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/command.h"

namespace ringtrain {
namespace {

using ::testing::HasSubstr;


testing::CommandOptions singleRank() {
  testing::CommandOptions opts;
  opts.timeout = std::chrono::seconds(60);
  opts.env = {{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(testing::freeLoopbackPort())}};
  return opts;
}

TEST(BenchAllreduce, FrontEndRunsTheBenchmarkAndChecksData) {
  const auto r = testing::runCommand({testing::binPath("ringtrain"), "bench", "allreduce", "--backend", "gloo",
                                      "--sizes", "4K,12K", "--iters", "3", "--warmup", "1"},
                                     singleRank());
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("backend gloo, 1 ranks"));
  EXPECT_THAT(r.out, HasSubstr("ring/native"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("\n +4K +1024 +3 .* ok .* ok"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("\n +12K +3072 +3 .* ok .* ok"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("WRONG")));
}

TEST(BenchAllreduce, BadSizeIsBadInput) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--sizes", "4Q"}, "4Q"},
      // Beyond size_t, the conversion died with SIGFPE; beyond the vector's limit, an internal error.
      {{"--sizes", "99999999999999999999"}, "size must be in [1, 64G]"},
      {{"--sizes", "9223372036854775808"}, "size must be in [1, 64G]"},
      {{"--min-bytes", "1M", "--max-bytes", "4K"}, "--min-bytes 1M is above --max-bytes 4K"},
      {{"--min-bytes", "0.5", "--max-bytes", "4K"}, "size must be in [1, 64G]"},  // a sweep from 0 never ends
      {{"--iters", "0"}, "--iters"},
      {{"--warmup", "-1"}, "--warmup"},
  };
  for (const auto& [args, expected] : cases) {
    std::vector<std::string> argv = {testing::binPath("ringtrain"), "bench", "allreduce"};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = testing::runCommand(argv, singleRank());
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr(expected));
  }
  // The benchmark answers as the command the user typed, not as the program behind it (allreduce_bench).
  const auto unknown = testing::runCommand({testing::binPath("ringtrain"), "bench", "allreduce", "--no-such-option"},
                                           singleRank());
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  EXPECT_THAT(unknown.err, HasSubstr("ringtrain bench allreduce: error: The following argument was not expected: "
                                     "--no-such-option"));
}

}  // namespace
}  // namespace ringtrain
