// The arrival board's diagnosis when the store itself is what failed.
#include "comm/arrival_board.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/process_state.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/dist/memory_store.h"

namespace ringtrain::comm {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

// A store whose host is gone: every call fails.
class DeadStore final : public dist::Store {
 public:
  void set(const std::string&, const dist::Bytes&) override { fail(); }
  dist::Bytes get(const std::string&, std::chrono::milliseconds) override { fail(); }
  int64_t add(const std::string&, int64_t) override { fail(); }
  dist::Bytes compareSet(const std::string&, const dist::Bytes&, const dist::Bytes&) override { fail(); }
  bool check(const std::vector<std::string>&) override { fail(); }
  void wait(const std::vector<std::string>&, std::chrono::milliseconds) override { fail(); }
  bool deleteKey(const std::string&) override { fail(); }

 private:
  [[noreturn]] static void fail() { throw CommError("store: no answer from 127.0.0.1:1"); }
};

// Stops `child` (SIGSTOP) and waits until it is; -1 if it cannot be stopped.
pid_t stopped(pid_t child) {
  if (child < 0 || ::kill(child, SIGSTOP) != 0) return -1;
  for (int i = 0; i < 200 && processState(child) != "stopped"; ++i) ::usleep(10000);
  return child;
}

// A child process of this test, stopped (SIGSTOP), to stand for a stopped rank; -1 if it cannot be made.
pid_t stoppedChild() {
  const pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  return stopped(child);
}

TEST(ArrivalBoard, NamesTheMissingRanks) {
  dist::MemoryStore store;
  ArrivalBoard zero(store, 0, 3), one(store, 1, 3);
  one.arrive(4);
  const std::string said = zero.describeMissing(5);
  EXPECT_THAT(said, HasSubstr("ranks 1, 2 did not arrive (rank 1 last seen at collective #4, rank 2 never reached a "
                              "collective)"));
}

// A rank stopped inside the collective (SIGSTOP) has arrived: the diagnosis names its process's state, as
// it does for a missing rank that is stopped. Rank 1 and 2 here are child processes of this test, whose
// addresses are published as their boards would.
TEST(ArrivalBoard, NamesRanksOfThisMachineWhoseProcessIsStopped) {
  const pid_t child = stoppedChild();
  ASSERT_GT(child, 0);
  const std::string mine = processAddress();
  const std::string machine = mine.substr(0, mine.find(' '));
  dist::MemoryStore store;
  ArrivalBoard zero(store, 0, 3);
  store.set("arrived/1", dist::toBytes("5"));
  store.set("address/1", dist::toBytes(machine + " " + std::to_string(child)));
  store.set("address/2", dist::toBytes("another-machine/pid:[1] " + std::to_string(child)));  // not looked at
  store.set("arrived/2", dist::toBytes("5"));
  EXPECT_EQ(zero.describeMissing(5),
            "every rank arrived, but rank 1's process (pid " + std::to_string(child) + ", this machine) is stopped");
  store.set("arrived/2", dist::toBytes("4"));
  EXPECT_THAT(zero.describeMissing(5), HasSubstr("rank 2 did not arrive (rank 2 last seen at collective #4); rank 1's "
                                                 "process (pid " + std::to_string(child) + ", this machine) is stopped"));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_THAT(zero.describeMissing(5), HasSubstr("rank 1's process (pid " + std::to_string(child) + ", this machine) is gone"));
  // A broken connection's diagnosis leaves out a process the failure's own words already say is gone, in
  // either same-host wording; another pid's words do not count.
  const std::string gone = "rank 1's process (pid " + std::to_string(child) + ", this machine) is gone";
  const std::string pid = "(pid " + std::to_string(child) + ")";
  EXPECT_THAT(zero.describeBrokenPeers("waiting for rank 1: its process " + pid + " is gone"), Not(HasSubstr(gone)));
  EXPECT_THAT(zero.describeBrokenPeers("same-host copy of 8 bytes from rank 1 " + pid +
                                       " failed: No such process (the process is gone)"),
              Not(HasSubstr(gone)));
  EXPECT_THAT(zero.describeBrokenPeers("waiting for rank 1: its process (pid 1) is gone"), HasSubstr(gone));
  EXPECT_THAT(zero.describeBrokenPeers("rank 1 " + pid + " is slow; something else is gone"), HasSubstr(gone));
}

// The process's first recorded failure reaches the peers through the board's listener (once per process: the
// one test here that records), and a peer's diagnosis says it.
TEST(ArrivalBoard, ARecordedFailureIsPublishedAndNamedInAPeersDiagnosis) {
  dist::MemoryStore store;
  {
    ArrivalBoard one(store, 1, 2);
    recordFailure(kExitBadInput, "corpus.txt:7: bad line");
    recordFailure(kExitFailure, "a second failure of the process: not recorded");
    ASSERT_TRUE(store.check({"failed/1"}));
    EXPECT_EQ(dist::toString(store.get("failed/1", 1000ms)), "corpus.txt:7: bad line");
  }
  ArrivalBoard zero(store, 0, 2);
  store.set("arrived/1", dist::toBytes("3"));
  EXPECT_EQ(zero.describeFailedPeers(), "rank 1 failed: corpus.txt:7: bad line");
  EXPECT_EQ(zero.describeMissing(5),
            "rank 1 did not arrive (rank 1 last seen at collective #3); rank 1 failed: corpus.txt:7: bad line");
  store.set("arrived/1", dist::toBytes("5"));
  EXPECT_EQ(zero.describeMissing(5), "every rank arrived, but rank 1 failed: corpus.txt:7: bad line");
}

// Consequences are not published (a broken connection, a timeout, "rank 0 says why"): quoted by the next
// rank, and that by the next, the messages would grow with every rank. Long messages and many failed peers
// are cut short.
TEST(ArrivalBoard, ConsequencesAreNotPublishedAndQuotesAreBounded) {
  dist::MemoryStore store;
  ArrivalBoard one(store, 1, 6), two(store, 2, 6), three(store, 3, 6), four(store, 4, 6), five(store, 5, 6);
  one.publishFailure(FailureRecord{1, kExitCommFailure, "connection reset", false});
  two.publishFailure(FailureRecord{1, kExitTimeout, "did not complete", false});
  three.publishFailure(FailureRecord{1, kExitBadInput, "rank 0 says why", true});
  EXPECT_FALSE(store.check({"failed/1"}) || store.check({"failed/2"}) || store.check({"failed/3"}));
  ArrivalBoard zero(store, 0, 6);
  EXPECT_EQ(zero.describeFailedPeers(), "");
  for (ArrivalBoard* b : {&one, &two, &three, &four}) {
    b->publishFailure(FailureRecord{1, kExitBadInput, std::string(5000, 'x'), false});
  }
  const std::string said = zero.describeFailedPeers();
  EXPECT_EQ(said, "rank 1 failed: " + std::string(1000, 'x') + "; rank 2 failed: " + std::string(1000, 'x') +
                      "; rank 3 failed: " + std::string(1000, 'x') + "; and 1 other rank(s)");
}

// A store that answers until it is told to die (its host stopped), and counts the reads of each key.
class DyingStore final : public dist::Store {
 public:
  std::atomic<bool> dead{false};
  std::atomic<int> address_reads{0};
  void set(const std::string& k, const dist::Bytes& v) override { alive().set(k, v); }
  dist::Bytes get(const std::string& k, std::chrono::milliseconds t) override {
    dist::Bytes value = alive().get(k, t);
    if (k.rfind("address/", 0) == 0) ++address_reads;
    return value;
  }
  int64_t add(const std::string& k, int64_t d) override { return alive().add(k, d); }
  dist::Bytes compareSet(const std::string& k, const dist::Bytes& e, const dist::Bytes& d) override {
    return alive().compareSet(k, e, d);
  }
  bool check(const std::vector<std::string>& keys) override { return alive().check(keys); }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds t) override { alive().wait(keys, t); }
  bool deleteKey(const std::string& k) override { return alive().deleteKey(k); }

 private:
  dist::Store& alive() {
    if (dead) throw CommError("store: no answer from 127.0.0.1:1");
    return store_;
  }
  dist::MemoryStore store_;
};

// Under mpirun rank 0 hosts the store: stopped, it takes the store with it. The peers' addresses, read
// early, still let the diagnosis name the stopped process.
TEST(ArrivalBoard, AddressesReadEarlyNameAStoppedNeighbourWhenTheStoreIsGone) {
  const pid_t child = stoppedChild();
  ASSERT_GT(child, 0);
  const std::string mine = processAddress();
  DyingStore store;
  store.set("address/0", dist::toBytes(mine.substr(0, mine.find(' ')) + " " + std::to_string(child)));
  ArrivalBoard one(store, 1, 2);
  for (int i = 0; i < 500 && store.address_reads == 0; ++i) ::usleep(10000);
  ASSERT_GT(store.address_reads, 0) << "the board never read its peer's address";
  store.dead = true;
  const std::string said = one.describeMissing(3);
  EXPECT_THAT(said, HasSubstr("could not tell which ranks are missing: the job's store failed"));
  EXPECT_THAT(said, HasSubstr("; rank 0's process (pid " + std::to_string(child) + ", this machine) is stopped"));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

// A child process that runs `sleep` with exactly this environment, then stopped; -1 if it cannot be made.
pid_t stoppedChildWithEnvironment(std::vector<std::string> environment) {
  std::vector<char*> env;
  for (std::string& entry : environment) env.push_back(entry.data());
  env.push_back(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    char sleep[] = "sleep", seconds[] = "60";
    char* argv[] = {sleep, seconds, nullptr};
    ::execve("/bin/sleep", argv, env.data());
    ::_exit(127);
  }
  if (child < 0) return -1;
  // Stopped once it runs sleep (its environment is then the new one), not while still this test's copy.
  for (int i = 0; i < 200; ++i) {
    char target[64] = {};
    const std::string exe = "/proc/" + std::to_string(child) + "/exe";
    const ssize_t n = ::readlink(exe.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)).find("sleep") != std::string::npos) break;
    ::usleep(10000);
  }
  return stopped(child);
}

// Sets environment variables for a test's span and restores what they were.
class ScopedEnvironment {
 public:
  explicit ScopedEnvironment(const std::vector<std::pair<std::string, std::string>>& values) {
    for (const auto& [name, value] : values) {
      const char* before = std::getenv(name.c_str());
      saved_.push_back({name, before != nullptr, before != nullptr ? before : ""});
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedEnvironment() {
    for (const Saved& s : saved_) s.was_set ? ::setenv(s.name.c_str(), s.value.c_str(), 1) : ::unsetenv(s.name.c_str());
  }

 private:
  struct Saved {
    std::string name;
    bool was_set;
    std::string value;
  };
  std::vector<Saved> saved_;
};

// Node 0's ringrun hosts the store. Stopped before the early reads got a peer's address (the job had just
// begun), it leaves the diagnosis nothing to read; a stopped rank of this machine is still found: a child of
// ringrun (this test stands for it) with this job's token, this attempt and its rank. Another job's stopped
// rank (its own token), one of an earlier attempt and a process ringrun did not start are not named.
TEST(ArrivalBoard, UnderRingrunAStoppedRankWhoseAddressWasNeverReadIsFoundByItsEnvironment) {
  const std::string token = "board-test-" + std::to_string(::getpid());
  const auto rankEnvironment = [&](const std::string& job_token, const std::string& attempt, int rank) {
    return std::vector<std::string>{"RINGTRAIN_LAUNCHER=ringrun", "RINGTRAIN_JOB_TOKEN=" + job_token,
                                    "RINGTRAIN_RESTART_COUNT=" + attempt, "RANK=" + std::to_string(rank)};
  };
  const pid_t rank2 = stoppedChildWithEnvironment(rankEnvironment(token, "1", 2));
  const pid_t other_job = stoppedChildWithEnvironment(rankEnvironment(token + "-other", "1", 0));
  const pid_t earlier_attempt = stoppedChildWithEnvironment(rankEnvironment(token, "0", 0));
  const std::vector<pid_t> children = {rank2, other_job, earlier_attempt};
  for (const pid_t child : children) {
    ASSERT_GT(child, 0);
    ASSERT_EQ(processState(child), "stopped") << "pid " << child;
  }
  std::string said, outside_ringrun;
  {
    DeadStore store;
    {
      ScopedEnvironment env({{"RINGTRAIN_LAUNCHER", "ringrun"}, {"RINGRUN_PID", std::to_string(::getpid())},
                             {"RINGTRAIN_JOB_TOKEN", token}, {"RINGTRAIN_RESTART_COUNT", "1"}});
      ArrivalBoard board(store, 1, 3);
      said = board.describeMissing(7);
    }
    {
      // The same processes, but this board's ringrun is another process: none of them is its rank.
      ScopedEnvironment env({{"RINGTRAIN_LAUNCHER", "ringrun"}, {"RINGRUN_PID", std::to_string(::getppid())},
                             {"RINGTRAIN_JOB_TOKEN", token}, {"RINGTRAIN_RESTART_COUNT", "1"}});
      ArrivalBoard board(store, 1, 3);
      outside_ringrun = board.describeMissing(7);
    }
  }
  for (const pid_t child : children) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  EXPECT_THAT(said, HasSubstr("the job's store failed"));
  EXPECT_THAT(said, HasSubstr("; rank 2's process (pid " + std::to_string(rank2) + ", this machine) is stopped"));
  EXPECT_THAT(said, ::testing::Not(HasSubstr("rank 0's process"))) << "another job's or attempt's rank";
  EXPECT_THAT(outside_ringrun, HasSubstr("the job's store failed"));
  EXPECT_THAT(outside_ringrun, ::testing::Not(HasSubstr("'s process"))) << "a process another ringrun did not start";
}

// Node 0's ringrun hosts the store: found stopped, it is said beside the store's failure.
TEST(ArrivalBoard, AStoppedRingrunIsSaidWhenTheStoreFails) {
  const pid_t ringrun = stoppedChild();
  ASSERT_GT(ringrun, 0);
  std::string said;
  {
    ScopedEnvironment env({{"RINGTRAIN_LAUNCHER", "ringrun"}, {"RINGRUN_PID", std::to_string(ringrun)},
                           {"RINGTRAIN_JOB_TOKEN", "board-test"}, {"RINGTRAIN_RESTART_COUNT", "0"}});
    DeadStore store;
    ArrivalBoard board(store, 1, 2);
    said = board.describeMissing(7);
  }
  ::kill(ringrun, SIGKILL);
  ::waitpid(ringrun, nullptr, 0);
  EXPECT_THAT(said, HasSubstr("node 0's ringrun); this machine's ringrun (pid " + std::to_string(ringrun) + ") is stopped"));
}

TEST(ArrivalBoard, AStoreThatFailsPointsAtWhoeverHostsIt) {
  DeadStore store;
  ArrivalBoard board(store, 1, 2);
  const std::string said = board.describeMissing(7);
  EXPECT_THAT(said, HasSubstr("could not tell which ranks are missing: the job's store failed (store: no answer"));
  EXPECT_THAT(said, HasSubstr("rank 0 outside ringrun"));
}

}  // namespace
}  // namespace ringtrain::comm
