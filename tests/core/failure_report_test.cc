// What a failing process records for its launcher: an exception that is not ringtrain's own.
#include "ringtrain/core/failure_report.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "testing/command.h"

namespace ringtrain {
namespace {

// (One test: a process records its first failure only.) An exception from elsewhere (LibTorch, the
// standard library) is an internal error with exit code 1, its message kept.
TEST(FailureReport, AForeignExceptionIsRecordedAsAnInternalError) {
  const std::string dir = testing::makeTempDir("failure_report");
  const std::string path = dir + "/record.json";
  ::setenv(kErrorFileEnv, path.c_str(), 1);
  recordFailure(std::runtime_error("vector::_M_range_check"));
  ::unsetenv(kErrorFileEnv);
  const std::optional<FailureRecord> record = readFailureRecord(path);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->exit_code, kExitFailure);
  EXPECT_EQ(record->message, "internal error: vector::_M_range_check");
  EXPECT_FALSE(record->follows_peer);
  EXPECT_FALSE(record->isConsequence());
}

}  // namespace
}  // namespace ringtrain
