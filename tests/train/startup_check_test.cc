#include "ringtrain/train/startup_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/comm/communicator.h"
#include "testing/rank_threads.h"

namespace ringtrain::train {
namespace {

using ::testing::HasSubstr;

// Ranks that read different copies of data.corpus (same settings, same item count) are stopped before the
// first step, not left to train mismatched items together.
TEST(StartupCheck, RanksWithDifferentCorporaAreStopped) {
  const config::JobConfig job;
  const auto results = testing::runWithCommunicators(2, testing::testCommOptions(20.0), [&](comm::Communicator& comm) {
    const std::string corpus = comm.rank() == 0 ? "2000 lines, 500 items, item list 00000000000000aa"
                                                : "2000 lines, 500 items, item list 00000000000000bb";
    checkRanksAgree(comm, job, "sgns 500 x 64", corpus);
  });
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.error_type, "ConfigError");
    EXPECT_THAT(r.error, HasSubstr("ranks disagree before the first step: rank 0 has 'config "));
    EXPECT_THAT(r.error, HasSubstr("item list 00000000000000bb'"));
    EXPECT_THAT(r.error, HasSubstr("each rank reads data.corpus itself"));
  }
  // The same corpus on both: no complaint.
  testing::expectAllOk(testing::runWithCommunicators(2, testing::testCommOptions(20.0), [&](comm::Communicator& comm) {
    checkRanksAgree(comm, job, "sgns 500 x 64", "2000 lines, 500 items, item list 00000000000000aa");
  }));
}

}  // namespace
}  // namespace ringtrain::train
