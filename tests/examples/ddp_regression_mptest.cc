// examples/ddp_regression.cc, a user's own LibTorch program on the library, run as its header says: alone,
// under ringrun and under mpirun. Every rank must end with the same parameters, having learnt.
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

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

TEST(ExampleDdpRegression, LearnsAloneAndAgainAlike) {
  const auto r = runCommand({binPath("example_ddp_regression"), "200"}, {60s});
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  expectLearntAlike(r.out, 1);
  // It seeds its model: a second run ends with the same parameters (Debian's LibTorch seeds at random).
  const auto again = runCommand({binPath("example_ddp_regression"), "200"}, {60s});
  ASSERT_TRUE(again.ok()) << again.out << again.err;
  ASSERT_EQ(rankLines(again.out).size(), 1u) << again.out;
  EXPECT_EQ(rankLines(again.out)[0].checksum, rankLines(r.out)[0].checksum);
}

// Its step count is all of its argument: atoi read "3x" as 3 and 4294967298 as 2.
TEST(ExampleDdpRegression, RefusesAStepCountThatIsNotAWholePositiveNumber) {
  for (const char* steps : {"3x", "4294967298", "0", "-1", ""}) {
    const auto r = runCommand({binPath("example_ddp_regression"), steps}, {60s});
    EXPECT_EQ(r.exit_code, 2) << steps << ": " << r.out << r.err;
    EXPECT_THAT(r.err, ::testing::HasSubstr("usage: ")) << steps;
  }
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

// Launched by hand with one rank given to two processes (a copied launch line): the one that comes second
// is refused at once, naming the rank, and the job goes on with the other.
TEST(ExampleDdpRegression, TwoProcessesGivenOneRankAreTold) {
  const std::string port = std::to_string(testing::freeLoopbackPort());
  std::vector<testing::CommandResult> results(3);
  std::vector<std::thread> processes;
  for (int p = 0; p < 3; ++p) {
    processes.emplace_back([&, p] {
      testing::CommandOptions options{120s};
      options.env = {{"RANK", p == 0 ? "0" : "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", port}};
      // Long enough that the duplicate, however late it is scheduled, finds the job still running.
      results[p] = runCommand({binPath("example_ddp_regression"), "6000"}, options);
    });
  }
  for (auto& t : processes) t.join();
  EXPECT_TRUE(results[0].ok()) << results[0].out << results[0].err;
  const bool second_refused = results[2].exit_code == 2;
  const testing::CommandResult& refused = second_refused ? results[2] : results[1];
  const testing::CommandResult& trained = second_refused ? results[1] : results[2];
  EXPECT_EQ(refused.exit_code, 2) << results[1].err << results[2].err;
  EXPECT_THAT(refused.err, ::testing::HasSubstr("rank 1 of this job was already taken by another process"));
  EXPECT_TRUE(trained.ok()) << trained.out << trained.err;
  expectLearntAlike(results[0].out + trained.out, 2);
}

// Launched by hand with another job's token: rank 0's store refuses it, and that is what the refused rank says
// first (it used to begin with "rank 0 did not start (or failed before it could), or the ranks were given
// different MASTER_ADDR/MASTER_PORT"). Rank 0, the example, says it refused a client in ringtrain's own
// format on stderr, as a library user gets it without setting up any logging (it was spdlog's default,
// "[2026-...] [warning]", on stdout). Rank 0 would wait comm.timeout_s (300 s) for rank 1: it is stopped.
TEST(ExampleDdpRegression, ARankWithAnotherJobsTokenIsToldSo) {
  const std::string port = std::to_string(testing::freeLoopbackPort());
  const std::string dir = testing::makeTempDir("ringtrain-token-");
  testing::CommandResult zero;
  std::thread host([&] {
    testing::CommandOptions options{8s};
    options.env = {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", port}, {"RINGTRAIN_JOB_TOKEN", "job-a"}};
    zero = runCommand({binPath("example_ddp_regression"), "5"}, options);
  });
  testing::CommandOptions options{60s};
  options.env = {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", port}, {"RINGTRAIN_JOB_TOKEN", "job-b"}};
  const auto one = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                               "run.output_dir=" + dir, "--set", "comm.timeout_s=30"},
                              options);
  host.join();
  EXPECT_EQ(one.exit_code, 3) << one.err;
  EXPECT_THAT(one.err, ::testing::HasSubstr("rank 1 cannot join the job: the store at 127.0.0.1:" + port +
                                            " refused this client: wrong job token"));
  EXPECT_THAT(one.err, ::testing::Not(::testing::HasSubstr("did not start")));
  EXPECT_TRUE(zero.timed_out) << zero.out << zero.err;
  EXPECT_THAT(zero.err, ::testing::ContainsRegex("[0-9]+:[0-9]+:[0-9]+\\.[0-9]+ W store server: refused 127\\.0\\.0\\.1:[0-9]+: "
                                                 "wrong job token"));
  EXPECT_THAT(zero.out, ::testing::Not(::testing::HasSubstr("[warning]")));
}

}  // namespace
}  // namespace ringtrain
