// The per-launch folder behind `ringrun --log-dir`: unique names, DIR/latest, and what is left alone.
#include "run_log_dir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ringtrain/core/error.h"
#include "testing/command.h"

namespace ringtrain::launch {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class RunLogDirTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::makeTempDir("run_log_dir"); }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

TEST_F(RunLogDirTest, LaunchesInTheSameSecondGetFoldersOfTheirOwnAndLatestNamesTheNewest) {
  const std::string dir = root_ + "/logs/nested";  // created, parents included
  const std::time_t start = 1700000000;
  const RunLogDir first = makeRunLogDir(dir, start, 0, 1);
  const RunLogDir second = makeRunLogDir(dir, start, 0, 1);
  EXPECT_TRUE(first.warning.empty()) << first.warning;
  EXPECT_TRUE(second.warning.empty()) << second.warning;
  EXPECT_TRUE(fs::is_directory(first.path));
  EXPECT_TRUE(fs::is_directory(second.path));
  EXPECT_EQ(second.path, first.path + ".1");
  EXPECT_EQ(fs::path(first.path).filename().string().size(), std::string("YYYYmmdd-HHMMSS").size());
  EXPECT_TRUE(fs::is_symlink(dir + "/latest"));
  EXPECT_EQ(fs::read_symlink(dir + "/latest"), fs::path(second.path).filename());  // relative: DIR may move
  EXPECT_FALSE(fs::exists(dir + "/.latest." + std::to_string(::getpid())));
}

TEST_F(RunLogDirTest, NodesOfOneJobNameTheirFolders) {
  const RunLogDir run = makeRunLogDir(root_, 1700000000, 3, 4);
  EXPECT_THAT(fs::path(run.path).filename().string(), ::testing::EndsWith("-node3"));
  EXPECT_FALSE(fs::exists(root_ + "/latest")) << "only node 0 points DIR/latest (nodes may share DIR)";
  const RunLogDir zero = makeRunLogDir(root_, 1700000000, 0, 4);
  EXPECT_EQ(fs::read_symlink(root_ + "/latest"), fs::path(zero.path).filename());
}

TEST_F(RunLogDirTest, ALatestThatIsNotALinkIsLeftAlone) {
  fs::create_directory(root_ + "/latest");
  std::ofstream(root_ + "/latest/mine.txt") << "keep";
  const RunLogDir run = makeRunLogDir(root_, 1700000000, 0, 1);
  EXPECT_THAT(run.warning, HasSubstr("latest is not a symbolic link"));
  EXPECT_TRUE(fs::is_directory(run.path));
  EXPECT_TRUE(fs::exists(root_ + "/latest/mine.txt"));
}

TEST_F(RunLogDirTest, AFolderThatCannotBeMadeIsAConfigErrorNamingIt) {
  std::ofstream(root_ + "/file") << "x";
  try {
    makeRunLogDir(root_ + "/file/logs", 1700000000, 0, 1);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--log-dir: cannot create " + root_ + "/file/logs"));
  }
}

}  // namespace
}  // namespace ringtrain::launch
