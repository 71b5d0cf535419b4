// Atomic writes land on a link's target, never on the link or on a device, FIFO or directory.
#include "ringtrain/core/file_target.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ringtrain/core/error.h"
#include "testing/command.h"

namespace ringtrain {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

class FileTargetTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::makeTempDir("file_target"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

TEST_F(FileTargetTest, FilesAndNewPathsAreTheirOwnTargets) {
  std::ofstream(path("file")) << "x";
  EXPECT_EQ(atomicWriteTarget(path("file")), path("file"));
  EXPECT_EQ(atomicWriteTarget(path("new")), path("new"));
  EXPECT_EQ(atomicWriteTarget(path("sub/new")), path("sub/new"));
}

TEST_F(FileTargetTest, LinksAreFollowedToTheEndRelativeOrAbsolute) {
  std::ofstream(path("file")) << "x";
  fs::create_symlink("file", path("relative"));
  fs::create_symlink(path("relative"), path("absolute_to_link"));
  EXPECT_EQ(fs::path(atomicWriteTarget(path("relative"))), fs::path(dir_) / "file");
  EXPECT_EQ(fs::path(atomicWriteTarget(path("absolute_to_link"))), fs::path(dir_) / "file");
  // A dangling link: the file it names is created, the link stays.
  fs::create_symlink("later", path("dangling"));
  EXPECT_EQ(fs::path(atomicWriteTarget(path("dangling"))), fs::path(dir_) / "later");
  fs::create_symlink("loop_b", path("loop_a"));
  fs::create_symlink("loop_a", path("loop_b"));
  EXPECT_THAT([&] { atomicWriteTarget(path("loop_a")); },
              ThrowsMessage<DataError>(HasSubstr("too many levels of symbolic links")));
}

TEST_F(FileTargetTest, DirectoriesFifosAndLinksToThemAreRefused) {
  fs::create_directories(path("dir"));
  EXPECT_THAT([&] { atomicWriteTarget(path("dir")); }, ThrowsMessage<DataError>(HasSubstr("it is a directory")));
  fs::create_symlink("dir", path("to_dir"));
  EXPECT_THAT([&] { atomicWriteTarget(path("to_dir")); }, ThrowsMessage<DataError>(HasSubstr("it is a directory")));
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  EXPECT_THAT([&] { atomicWriteTarget(path("fifo")); },
              ThrowsMessage<DataError>(HasSubstr(path("fifo") + ": it is not a regular file")));
  fs::create_symlink("fifo", path("to_fifo"));
  EXPECT_THAT([&] { atomicWriteTarget(path("to_fifo")); },
              ThrowsMessage<DataError>(HasSubstr(path("to_fifo") + ": it is not a regular file")));
  EXPECT_THAT([&] { atomicWriteTarget("/dev/null"); }, ThrowsMessage<DataError>(HasSubstr("not a regular file")));
  // /proc/self/fd/N of a pipe is a link to "pipe:[inode]", a name no path walk can follow: /dev/stdout
  // into a pipe.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  EXPECT_THAT([&] { atomicWriteTarget("/proc/self/fd/" + std::to_string(fds[1])); },
              ThrowsMessage<DataError>(HasSubstr("not a regular file")));
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace ringtrain
