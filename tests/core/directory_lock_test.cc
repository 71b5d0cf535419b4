// DirectoryLock: one holder per directory, the second told who holds it; free again once the holder goes.
#include "core/directory_lock.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>

#include "ringtrain/core/error.h"
#include "testing/command.h"

namespace ringtrain {
namespace {

using ::testing::HasSubstr;

TEST(DirectoryLock, ASecondHolderIsRefusedNamingTheFirstUntilItGoes) {
  const std::string dir = testing::makeTempDir("ringtrain-lock-");
  std::optional<DirectoryLock> first;
  first.emplace(dir, "run.output_dir");
  try {
    DirectoryLock second(dir, "run.output_dir");  // another open file: flock refuses it as it would a process
    ADD_FAILURE() << "two holders of " << dir;
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("run.output_dir: " + dir + " is in use by another ringtrain run (pid " +
                                    std::to_string(::getpid()) + " on "));
  }
  first.reset();
  EXPECT_NO_THROW(DirectoryLock(dir, "run.output_dir")) << "still held after its holder went";
  std::filesystem::remove_all(dir);
}

// One file held (log.metrics_file): two runs naming it would keep only the later's records. Its directory
// is made; another file of the same directory is free.
TEST(DirectoryLock, AFileIsHeldByALockFileBesideIt) {
  const std::string dir = testing::makeTempDir("ringtrain-lock-");
  const std::string file = dir + "/logs/metrics.jsonl";
  std::optional<DirectoryLock> first;
  first.emplace(DirectoryLock::forFile(file, "log.metrics_file"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/logs/.metrics.jsonl.ringtrain.lock"));
  EXPECT_THAT([&] { DirectoryLock::forFile(file, "log.metrics_file"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("log.metrics_file: " + file +
                                                              " is in use by another ringtrain run (pid " +
                                                              std::to_string(::getpid()))));
  EXPECT_NO_THROW(DirectoryLock::forFile(dir + "/logs/other.jsonl", "log.metrics_file"));
  EXPECT_NO_THROW(DirectoryLock(dir + "/logs", "run.output_dir")) << "a file's lock held its directory";
  first.reset();
  EXPECT_NO_THROW(DirectoryLock::forFile(file, "log.metrics_file")) << "still held after its holder went";
  std::filesystem::remove_all(dir);
}

TEST(DirectoryLock, ADirectoryThatCannotHoldTheLockFileIsSaid) {
  EXPECT_THAT([] { DirectoryLock("/nonexistent-ringtrain-dir", "checkpoint.dir"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("checkpoint.dir: cannot create /nonexistent-ringtrain-dir/")));
}

}  // namespace
}  // namespace ringtrain
