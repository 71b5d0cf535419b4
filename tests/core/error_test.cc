#include "ringtrain/core/error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ringtrain {
namespace {

using ::testing::HasSubstr;

TEST(Error, CheckRecordsConditionValuesAndLocation) {
  const int world_size = 3;
  const int rank = 5;
  try {
    RT_CHECK_LT(rank, world_size, "rank out of range");
    FAIL();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_THAT(what, HasSubstr("rank out of range"));
    EXPECT_THAT(what, HasSubstr("rank < world_size"));
    EXPECT_THAT(what, HasSubstr("rank = 5, world_size = 3"));
    EXPECT_THAT(what, HasSubstr("tests/core/error_test.cc:"));
  }
}

TEST(Error, CheckThrowsTheRequestedTypeAndPassesSilently) {
  EXPECT_NO_THROW(RT_CHECK(1 + 1 == 2));
  EXPECT_THROW(RT_CHECK_T(DataError, false, "bad line ", 7), DataError);
  try {
    RT_CHECK_T(TimeoutError, false, "allreduce #", 12, " timed out");
  } catch (const CommError& e) {  // a timeout is a communication failure
    EXPECT_THAT(e.what(), HasSubstr("allreduce #12 timed out"));
    EXPECT_EQ(e.exitCode(), kExitTimeout);
  }
}

// Bad input names the user's file, line or key; ringtrain's source location would be noise there. Without
// a message of its own the condition and its place are all there is, so they stay.
TEST(Error, BadInputSaysItsMessageWithoutTheSourceLocation) {
  const int got = 7;
  EXPECT_THAT([&] { RT_CHECK_T(ConfigError, got < 5, "job.yaml:3: data.window must be < 5, got ", got); },
              ::testing::ThrowsMessage<ConfigError>(::testing::StrEq("job.yaml:3: data.window must be < 5, got 7")));
  EXPECT_THAT([&] { RT_CHECK_OP_T(DataError, ==, got, 5, "corpus.txt:9: expected 5 items"); },
              ::testing::ThrowsMessage<DataError>(::testing::StrEq("corpus.txt:9: expected 5 items (got = 7, 5 = 5)")));
  EXPECT_THAT([&] { RT_CHECK_T(DataError, got < 5); },
              ::testing::ThrowsMessage<DataError>(HasSubstr("got < 5 at tests/core/error_test.cc:")));
  EXPECT_THAT([&] { RT_CHECK_T(CommError, got < 5, "rank 1 gone"); },
              ::testing::ThrowsMessage<CommError>(HasSubstr("rank 1 gone (check failed: got < 5 at tests/core/")));
}

TEST(Error, ExitCodesSeparateBadInputFromFailures) {
  EXPECT_EQ(ConfigError("x").exitCode(), 2);
  EXPECT_EQ(DataError("x").exitCode(), 2);
  EXPECT_EQ(CommError("x").exitCode(), 3);
  EXPECT_EQ(TimeoutError("x").exitCode(), 4);
  EXPECT_EQ(Error("x").exitCode(), 1);
}

}  // namespace
}  // namespace ringtrain
