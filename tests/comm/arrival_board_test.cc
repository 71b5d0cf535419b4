// The arrival board's diagnosis when the store itself is what failed.
#include "comm/arrival_board.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "ringtrain/dist/memory_store.h"

namespace ringtrain::comm {
namespace {

using ::testing::HasSubstr;

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

TEST(ArrivalBoard, AStoreThatFailsPointsAtWhoeverHostsIt) {
  DeadStore store;
  ArrivalBoard board(store, 1, 2);
  const std::string said = board.describeMissing(7);
  EXPECT_THAT(said, HasSubstr("could not tell which ranks are missing: the job's store failed (store: no answer"));
  EXPECT_THAT(said, HasSubstr("rank 0 outside ringrun"));
}

}  // namespace
}  // namespace ringtrain::comm
