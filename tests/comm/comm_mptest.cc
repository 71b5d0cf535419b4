// Communicators in real processes: comm_check_helper under mpirun (MPI backend) and under ringrun (Gloo
// over the TCP store), world sizes 1-4; a rank that stops itself (SIGSTOP) and mismatched collectives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <string>

#include "ringtrain/comm/factory.h"
#include "testing/command.h"

namespace ringtrain::comm {
namespace {

using testing::binPath;
using testing::CommandResult;
using testing::runCommand;

bool built(const std::string& backend) {
  for (const auto& b : builtBackends()) {
    if (b == backend) return true;
  }
  return false;
}

// A port that was free a moment ago (the store under mpirun binds MASTER_PORT).

CommandResult mpirun(int np, const std::vector<std::string>& args, int timeout_s = 120) {
  std::vector<std::string> argv = {"mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                   "-np", std::to_string(np), "-x", "MASTER_PORT=" + std::to_string(testing::freeLoopbackPort()),
                                   binPath("comm_check_helper")};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::CommandOptions options;
  options.timeout = std::chrono::seconds(timeout_s);
  options.env = {{"OMPI_ALLOW_RUN_AS_ROOT", "1"}, {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"}};
  return runCommand(argv, options);
}

CommandResult ringrun(int np, const std::vector<std::string>& args, int timeout_s = 120) {
  std::vector<std::string> argv = {binPath("ringrun"), "--nproc-per-node", std::to_string(np), "--standalone",
                                   "--grace-period", "1", "--", binPath("comm_check_helper")};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::CommandOptions options;
  options.timeout = std::chrono::seconds(timeout_s);
  return runCommand(argv, options);
}

size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

TEST(CommProcesses, MpiCollectivesAtWorldSizes1ToMax) {
  if (!built("mpi")) GTEST_SKIP() << "MPI backend not built";
  for (int np = 1; np <= testing::maxTestRanks(); ++np) {
    const auto r = mpirun(np, {"mpi", "collectives"});
    ASSERT_TRUE(r.ok()) << "np " << np << "\n" << r.out << r.err;
    EXPECT_EQ(countOf(r.out, " ok"), static_cast<size_t>(np)) << r.out;
  }
}

TEST(CommProcesses, MpiGlooAndRingAgreeBitForBit) {
  if (!built("mpi") || !built("gloo")) GTEST_SKIP() << "needs the MPI and Gloo backends";
  for (int np : {2, 3}) {
    const auto r = mpirun(np, {"mpi", "compare"});
    ASSERT_TRUE(r.ok()) << "np " << np << "\n" << r.out << r.err;
    EXPECT_EQ(countOf(r.out, " ok"), static_cast<size_t>(np)) << r.out;
  }
}

TEST(CommProcesses, GlooCollectivesUnderRingrunAtWorldSizes1ToMax) {
  if (!built("gloo")) GTEST_SKIP() << "Gloo backend not built";
  for (int np = 1; np <= testing::maxTestRanks(); ++np) {
    const auto r = ringrun(np, {"gloo", "collectives"});
    ASSERT_TRUE(r.ok()) << "np " << np << "\n" << r.out << r.err;
    EXPECT_EQ(countOf(r.out + r.err, " ok"), static_cast<size_t>(np)) << r.out << r.err;
  }
}

TEST(CommProcesses, StoppedGlooRankIsNamedByTheOthers) {
  if (!built("gloo")) GTEST_SKIP() << "Gloo backend not built";
  const auto r = ringrun(3, {"gloo", "stop", "1.5"});
  EXPECT_FALSE(r.ok());
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("gloo allreduce(float32, 1 elements, sum) (collective #1) did not complete within 1.5 s"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("rank 2 did not arrive (rank 2 last seen at collective #0)"), std::string::npos) << all;
}

// A rank whose process is gone fails the others at once, not after comm.timeout_s (60 s here): Gloo sees
// its sockets close, the same-host notices see its pid vanish.
TEST(CommProcesses, GlooRankThatExitedFailsTheOthersAtOnce) {
  if (!built("gloo")) GTEST_SKIP() << "Gloo backend not built";
  const auto start = std::chrono::steady_clock::now();
  const auto r = ringrun(3, {"gloo", "leave", "60"});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_FALSE(r.ok());
  const std::string all = r.out + r.err;
  EXPECT_LT(seconds, 30.0) << all;
  EXPECT_NE(all.find("rank 2 leaving"), std::string::npos) << all;
  // The first failing rank is reported (ringrun then stops the rest); it names the collective and rank 2.
  EXPECT_NE(all.find("allreduce(float32, 1 elements, sum) (collective #1) failed on rank"), std::string::npos) << all;
  EXPECT_NE(all.find("rank 2"), std::string::npos) << all;
  // A process the failure itself says is gone (the same-host notices, checked first) is not said gone again by
  // the diagnosis after it.
  EXPECT_THAT(all, ::testing::ContainsRegex("waiting for rank 2: its process \\(pid [0-9]+\\) is gone"));
  EXPECT_FALSE(std::regex_search(all, std::regex(R"(\(pid ([0-9]+)\) is gone[^\n]*\(pid \1, this machine\) is gone)")))
      << all;
}

// Without the same-host notices, what the others see of a rank that vanished is Gloo's "connection reset
// by peer": its process's state on this machine names it.
TEST(CommProcesses, AGlooRankThatVanishedIsNamedByItsProcessWithoutSameHostCopy) {
  if (!built("gloo")) GTEST_SKIP() << "Gloo backend not built";
  const auto r = ringrun(3, {"gloo", "leave", "60", "no-same-host-copy"});
  EXPECT_FALSE(r.ok());
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("(collective #1) failed on rank"), std::string::npos) << all;
  EXPECT_THAT(all, ::testing::ContainsRegex("rank 2's process \\(pid [0-9]+, this machine\\) is (gone|exited)"));
}

TEST(CommProcesses, StoppedMpiRankIsNamedByTheOthers) {
  if (!built("mpi")) GTEST_SKIP() << "MPI backend not built";
  const auto r = mpirun(3, {"mpi", "stop", "1.5"});
  EXPECT_FALSE(r.ok());
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("mpi allreduce(float32, 1 elements, sum) (collective #1) did not complete within 1.5 s"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("rank 2 did not arrive (rank 2 last seen at collective #0)"), std::string::npos) << all;
}

// A rank that fails (an exception, not a communication error) while the others wait in a collective: its
// MPI_Finalize at exit used to wait for them until their timeout (2 x 20 s here), so mpirun ended the job
// only then.
TEST(CommProcesses, AFailedMpiRankEndsTheJobWithoutWaitingForTheTimeout) {
  if (!built("mpi")) GTEST_SKIP() << "MPI backend not built";
  const auto start = std::chrono::steady_clock::now();
  const auto r = mpirun(2, {"mpi", "fail", "20"});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_FALSE(r.ok());
  EXPECT_NE((r.out + r.err).find("rank 0 fails on purpose"), std::string::npos) << r.out << r.err;
  EXPECT_LT(seconds, 15.0) << r.out << r.err;
}

// A rank that fails records why while its communicator lives, then hangs in its cleanup: the peer's timed-out
// collective says why rank 1 is missing, and ringrun blames rank 1 with its exit code (2), though the peer
// (4) ended first.
TEST(CommProcesses, APeerLeftInACollectiveNamesTheRankThatFailedAndWhy) {
  if (!built("gloo")) GTEST_SKIP() << "Gloo backend not built";
  const auto r = ringrun(2, {"gloo", "fail-recorded", "3"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, ::testing::ContainsRegex("comm_check: rank 0: .*; rank 1 failed: rank 1 fails on purpose"));
  EXPECT_THAT(r.err, ::testing::HasSubstr("ringrun: rank 1 (node 0, local rank 1, pid"));
  EXPECT_THAT(r.err, ::testing::HasSubstr("ringrun: rank 1 failed with: rank 1 fails on purpose"));
}

TEST(CommProcesses, MismatchedCollectivesAcrossProcesses) {
  const std::string want =
      "rank 1 called broadcast(float32, 4 elements, root 0) as collective #0 but rank 0 called allreduce(float32, 4 "
      "elements, sum)";
  if (built("gloo")) {
    const auto g = ringrun(2, {"gloo", "mismatch"});
    EXPECT_FALSE(g.ok());
    EXPECT_NE((g.out + g.err).find(want), std::string::npos) << g.out << g.err;
  }
  if (!built("mpi")) return;
  const auto m = mpirun(2, {"mpi", "mismatch"});
  EXPECT_FALSE(m.ok());
  EXPECT_NE((m.out + m.err).find(want), std::string::npos) << m.out << m.err;
}

}  // namespace
}  // namespace ringtrain::comm
