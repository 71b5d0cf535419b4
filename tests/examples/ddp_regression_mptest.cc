// examples/ddp_regression.cc, a user's own LibTorch program on the library, run as its header says: alone,
// under ringrun and under mpirun. Every rank must end with the same parameters, having learnt.
#include <regex>
#include <set>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/command.h"

namespace ringtrain {
namespace {

using testing::binPath;
using testing::runCommand;
using namespace std::chrono_literals;

struct RankLine {
  int rank = -1;
  int world = -1;
  double first_loss = 0, last_loss = 0;
  std::string checksum;
};

// The last line of every rank: "rank R of N: loss A -> B, parameters' checksum C".
std::vector<RankLine> rankLines(const std::string& out) {
  static const std::regex line(R"(rank (\d+) of (\d+): loss ([0-9.]+) -> ([0-9.]+), parameters' checksum (\S+))");
  std::vector<RankLine> lines;
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it) {
    lines.push_back({std::stoi((*it)[1]), std::stoi((*it)[2]), std::stod((*it)[3]), std::stod((*it)[4]), (*it)[5]});
  }
  return lines;
}

void expectLearntAlike(const std::string& out, int world) {
  const auto lines = rankLines(out);
  ASSERT_EQ(lines.size(), static_cast<size_t>(world)) << out;
  std::set<int> ranks;
  for (const RankLine& l : lines) {
    ranks.insert(l.rank);
    EXPECT_EQ(l.world, world) << out;
    EXPECT_LT(l.last_loss, l.first_loss / 20) << "rank " << l.rank << " did not learn:\n" << out;
    EXPECT_EQ(l.checksum, lines[0].checksum) << "ranks " << l.rank << " and " << lines[0].rank << " differ:\n" << out;
  }
  EXPECT_EQ(ranks.size(), static_cast<size_t>(world)) << out;
}

TEST(ExampleDdpRegression, LearnsAlone) {
  const auto r = runCommand({binPath("example_ddp_regression"), "200"}, {60s});
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  expectLearntAlike(r.out, 1);
}

TEST(ExampleDdpRegression, RanksUnderRingrunEndAlike) {
  for (const int world : {2, 3}) {
    const auto r = runCommand({binPath("ringrun"), "--standalone", "--nproc-per-node", std::to_string(world), "--",
                               binPath("example_ddp_regression"), "200"},
                              {120s});
    ASSERT_TRUE(r.ok()) << "world " << world << ":\n" << r.out << r.err;
    expectLearntAlike(r.out, world);
  }
}

TEST(ExampleDdpRegression, RanksUnderMpirunEndAlike) {
  if (runCommand({"sh", "-c", "command -v mpirun"}, {10s}).exit_code != 0) GTEST_SKIP() << "no mpirun";
  testing::CommandOptions options{120s};
  options.env = {{"OMPI_ALLOW_RUN_AS_ROOT", "1"}, {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
                 {"MASTER_PORT", std::to_string(testing::freeLoopbackPort())}};
  const auto r = runCommand({"mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2",
                             binPath("example_ddp_regression"), "200"},
                            options);
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  expectLearntAlike(r.out, 2);
}

TEST(ExampleDdpRegression, ABadArgumentIsSaid) {
  const auto r = runCommand({binPath("example_ddp_regression"), "0"}, {30s});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, ::testing::HasSubstr("usage:"));
}

}  // namespace
}  // namespace ringtrain
