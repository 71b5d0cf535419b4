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

TEST(Error, ExitCodesSeparateBadInputFromFailures) {
  EXPECT_EQ(ConfigError("x").exitCode(), 2);
  EXPECT_EQ(DataError("x").exitCode(), 2);
  EXPECT_EQ(CommError("x").exitCode(), 3);
  EXPECT_EQ(TimeoutError("x").exitCode(), 4);
  EXPECT_EQ(Error("x").exitCode(), 1);
}

}  // namespace
}  // namespace ringtrain
