// The arrival board's diagnosis when the store itself is what failed.
#include "comm/arrival_board.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/process_state.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/dist/memory_store.h"

namespace ringtrain::comm {
namespace {

using ::testing::HasSubstr;
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

TEST(ArrivalBoard, NamesTheMissingRanks) {
  dist::MemoryStore store;
  ArrivalBoard zero(store, 0, 3), one(store, 1, 3);
  one.arrive(4);
  const std::string said = zero.describeMissing(5);
  EXPECT_THAT(said, HasSubstr("ranks 1, 2 did not arrive (rank 1 last reached collective #4, rank 2 never reached a "
                              "collective)"));
}

// A rank stopped inside the collective (SIGSTOP) has arrived: the diagnosis names its process's state, as
// it does for a missing rank that is stopped. Rank 1 and 2 here are child processes of this test, whose
// addresses are published as their boards would.
TEST(ArrivalBoard, NamesRanksOfThisMachineWhoseProcessIsStopped) {
  const pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  ASSERT_EQ(::kill(child, SIGSTOP), 0);
  for (int i = 0; i < 200 && processState(child) != "stopped"; ++i) ::usleep(10000);
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
  EXPECT_THAT(zero.describeMissing(5), HasSubstr("rank 2 did not arrive (rank 2 last reached collective #4); rank 1's "
                                                 "process (pid " + std::to_string(child) + ", this machine) is stopped"));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_THAT(zero.describeMissing(5), HasSubstr("rank 1's process (pid " + std::to_string(child) + ", this machine) is gone"));
}

// A failure this process records is published once for its peers (the first: what follows is its
// consequence), and a peer's timed-out collective says it.
TEST(ArrivalBoard, ARecordedFailureIsPublishedOnceAndNamedInAPeersDiagnosis) {
  dist::MemoryStore store;
  {
    ArrivalBoard one(store, 1, 2);
    recordFailure(kExitBadInput, "corpus.txt:7: bad line");
    recordFailure(kExitCommFailure, "connection reset");
    ASSERT_TRUE(store.check({"failed/1"}));
    EXPECT_EQ(dist::toString(store.get("failed/1", 1000ms)), "corpus.txt:7: bad line");
  }
  recordFailure(kExitFailure, "after the board is gone: no listener is left to call");
  ArrivalBoard zero(store, 0, 2);
  store.set("arrived/1", dist::toBytes("3"));
  EXPECT_EQ(zero.describeFailedPeers(), "rank 1 failed: corpus.txt:7: bad line");
  EXPECT_EQ(zero.describeMissing(5),
            "rank 1 did not arrive (rank 1 last reached collective #3); rank 1 failed: corpus.txt:7: bad line");
  store.set("arrived/1", dist::toBytes("5"));
  EXPECT_EQ(zero.describeMissing(5), "every rank arrived, but rank 1 failed: corpus.txt:7: bad line");
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
