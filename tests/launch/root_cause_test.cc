// The root cause of a failed job: what a rank records (core/failure_report.h) and whom ringrun blames.
#include "root_cause.h"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/process_state.h"
#include "ringtrain/core/error.h"

namespace ringtrain::launch {
namespace {

FailedRank exited(int rank, int code, int64_t ended_ns) {
  FailedRank f;
  f.rank = rank;
  f.exit_code = code;
  f.ended_ns = ended_ns;
  return f;
}

FailedRank recorded(int rank, int code, int64_t time_ns) {
  FailedRank f;
  f.rank = rank;
  f.record = FailureRecord{time_ns, code, "because"};
  return f;
}

// The race behind a wrong blame: rank 0 fails on bad input and, while it still unwinds, rank 1 sees its
// connection reset and exits first. Rank 0's record (written before it let go of its connections) is earlier
// and is no consequence: it is the root cause.
TEST(RootCause, AFailureThatIsNoConsequenceBeatsAConnectionLostThatEndedFirst) {
  EXPECT_EQ(pickRootCause({exited(1, kExitCommFailure, 2000), recorded(0, kExitBadInput, 1000)}), 1u);
  // Even recorded later: a consequence does not cause what is no consequence.
  EXPECT_EQ(pickRootCause({recorded(1, kExitCommFailure, 1000), recorded(0, kExitBadInput, 1500)}), 1u);
  // A timeout is a consequence too.
  EXPECT_EQ(pickRootCause({exited(2, kExitTimeout, 100), exited(3, kExitFailure, 900)}), 1u);
}

// "rank 0 says why": a rank that fails because the ranks agreed that rank 0 failed says it follows a peer,
// and is no root cause though it recorded first with the same exit code.
TEST(RootCause, ARankThatSaysItFollowsAPeerIsAConsequence) {
  FailedRank follower = recorded(1, kExitBadInput, 1000);
  follower.record->follows_peer = true;
  EXPECT_EQ(pickRootCause({follower, recorded(0, kExitBadInput, 1500)}), 1u);
}

TEST(RootCause, ARankKilledByASignalIsNoConsequence) {
  FailedRank killed;
  killed.rank = 3;
  killed.killed_by_signal = true;
  killed.ended_ns = 5000;
  EXPECT_EQ(pickRootCause({recorded(0, kExitCommFailure, 4000), killed}), 1u);
}

TEST(RootCause, AmongLikeFailuresTheEarliestThenTheLowestRank) {
  constexpr int64_t kSecond = 1'000'000'000;
  EXPECT_EQ(pickRootCause({exited(0, kExitCommFailure, 3 * kSecond), recorded(1, kExitCommFailure, 2 * kSecond)}), 1u);
  EXPECT_EQ(pickRootCause({exited(2, kExitFailure, 300), exited(1, kExitFailure, 300)}), 1u);
  EXPECT_EQ(pickRootCause({exited(4, 7, 10)}), 0u);
  // Within kSameMomentNs of each other: the lowest rank, whichever recorded first.
  EXPECT_EQ(pickRootCause({recorded(1, kExitBadInput, kSecond), recorded(0, kExitBadInput, kSecond + kSameMomentNs / 2)}),
            1u);
  EXPECT_EQ(pickRootCause({recorded(1, kExitBadInput, kSecond), recorded(0, kExitBadInput, kSecond + 2 * kSameMomentNs)}),
            0u);
}

class FailureRecordTest : public ::testing::Test {
 protected:
  void TearDown() override { ::unsetenv(kErrorFileEnv); }
};

// The first failure a process records is the one written; the file is whole JSON that ringrun reads back.
// (One test: recordFailure() writes once per process.)
TEST_F(FailureRecordTest, TheFirstFailureIsWrittenAndReadBackAndLaterOnesAreNot) {
  FailureRecordDir dir;
  const std::string path = dir.pathFor(0, 3);
  ASSERT_FALSE(path.empty());
  EXPECT_FALSE(readFailureRecord(path).has_value());
  ::setenv(kErrorFileEnv, path.c_str(), 1);
  const auto before = std::chrono::system_clock::now().time_since_epoch();
  recordFailure(kExitBadInput, "corpus.txt:3: \"quoted\"\n and a second line", /*follows_peer=*/true);
  recordFailure(kExitCommFailure, "connection reset");
  const std::optional<FailureRecord> record = readFailureRecord(path);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->exit_code, kExitBadInput);
  EXPECT_EQ(record->message, "corpus.txt:3: \"quoted\"\n and a second line");
  EXPECT_TRUE(record->follows_peer);
  EXPECT_GE(record->time_ns, std::chrono::duration_cast<std::chrono::nanoseconds>(before).count());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(FailureRecordDir, IsRemovedWithTheObjectAndAnUnreadableRecordIsNone) {
  std::string dir;
  {
    FailureRecordDir records;
    const std::string path = records.pathFor(1, 0);
    dir = std::filesystem::path(path).parent_path().string();
    EXPECT_TRUE(std::filesystem::is_directory(dir));
    std::ofstream(path) << "{\"time_ns\": 1, \"exit";  // a record cut short
    EXPECT_FALSE(readFailureRecord(path).has_value());
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
}

// A ringrun killed with SIGKILL leaves its directory behind; the next one removes it, and leaves alone
// those of ringruns still running, of another PID namespace, and anything else.
TEST(FailureRecordDir, TheNextRingrunRemovesTheDirectoriesOfGoneOnes) {
  namespace fs = std::filesystem;
  const fs::path tmp = fs::temp_directory_path() / ("root-cause-sweep-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const pid_t gone = ::fork();  // a pid that surely runs no more: a child reaped at once
  if (gone == 0) ::_exit(0);
  ASSERT_GT(gone, 0);
  ASSERT_EQ(::waitpid(gone, nullptr, 0), gone);
  const std::string ns = pidNamespace();
  if (ns.empty()) GTEST_SKIP() << "/proc/self/ns/pid does not say this process's PID namespace";
  const auto dir = [&](const std::string& name) {
    fs::create_directories(tmp / name);
    std::ofstream(tmp / name / "attempt0-rank1.json") << "{}";
    return tmp / name;
  };
  const fs::path stale = dir("ringrun-failures-" + ns + "-" + std::to_string(gone) + "-abc123");
  const fs::path running = dir("ringrun-failures-" + ns + "-" + std::to_string(::getppid()) + "-def456");
  const fs::path other_namespace = dir("ringrun-failures-1" + ns + "-" + std::to_string(gone) + "-ghi789");
  const fs::path old_style = dir("ringrun-failures-Xy12Zq");
  const fs::path unrelated = dir("ringrun-failures-" + ns + "-notapid-jkl000");
  removeRecordDirsOfGoneRingruns(tmp.string(), ns);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(running / "attempt0-rank1.json"));
  EXPECT_TRUE(fs::exists(other_namespace));
  EXPECT_TRUE(fs::exists(old_style));
  EXPECT_TRUE(fs::exists(unrelated));
  removeRecordDirsOfGoneRingruns(tmp.string(), "");  // no namespace known: nothing is touched
  EXPECT_TRUE(fs::exists(running));

  // Through the constructor: a new directory under $TMPDIR named by this process, the stale one gone.
  dir("ringrun-failures-" + ns + "-" + std::to_string(gone) + "-again1");
  const char* saved = std::getenv("TMPDIR");
  const std::string saved_tmpdir = saved != nullptr ? saved : "";
  ::setenv("TMPDIR", tmp.c_str(), 1);
  {
    FailureRecordDir records;
    const fs::path made = fs::path(records.pathFor(0, 0)).parent_path();
    EXPECT_EQ(made.parent_path(), tmp);
    EXPECT_NE(made.filename().string().find("-" + std::to_string(::getpid()) + "-"), std::string::npos)
        << made << " does not carry this process's pid";
  }
  if (saved != nullptr) {
    ::setenv("TMPDIR", saved_tmpdir.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  int left = 0;
  for (const auto& entry : fs::directory_iterator(tmp)) {
    left += entry.path().filename().string().find("-again1") != std::string::npos;
  }
  EXPECT_EQ(left, 0) << "the constructor left a gone ringrun's directory";
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace ringtrain::launch
