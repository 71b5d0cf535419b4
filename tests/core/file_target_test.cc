// Atomic writes land on a link's target, never on the link or on a device, FIFO or directory; AtomicFile
// replaces its target whole at commit, or not at all.
#include "ringtrain/core/file_target.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

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

std::string contents(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The files of a directory, by name: what an atomic write left beside its target.
std::vector<std::string> namesIn(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A descriptor's name (/dev/stdout redirected to a file, /dev/fd/N, /proc/self/fd/N) leads to a regular
// file, but replacing that file by name would leave the descriptor's holder writing to the old one, and
// nothing can be placed beside /dev/stdout: refused, the file untouched.
TEST_F(FileTargetTest, ADescriptorsNameIsRefusedEvenWhenItLeadsToAFile) {
  std::ofstream(path("redirect")) << "kept";
  const int fd = ::open(path("redirect").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  for (const std::string name : {"/proc/self/fd/" + std::to_string(fd), "/dev/fd/" + std::to_string(fd)}) {
    EXPECT_THAT([&] { atomicWriteTarget(name); },
                ThrowsMessage<DataError>(HasSubstr(name + ": it names a descriptor of this process")));
  }
  ::close(fd);
  EXPECT_EQ(contents(path("redirect")), "kept");
  // A link of one's own into /proc is followed as far as the descriptor, and refused there too.
  const int again = ::open(path("redirect").c_str(), O_WRONLY);
  fs::create_symlink("/proc/self/fd/" + std::to_string(again), path("to_fd"));
  EXPECT_THAT([&] { atomicWriteTarget(path("to_fd")); }, ThrowsMessage<DataError>(HasSubstr("names a descriptor")));
  ::close(again);
}

TEST_F(FileTargetTest, AnAtomicFileReplacesItsTargetOnlyAtCommit) {
  std::ofstream(path("out")) << "old";
  {
    AtomicFile file(path("out"), "export");
    file.write("new ");
    file.write("bytes");
    EXPECT_EQ(contents(path("out")), "old");  // a reader sees the old file until the commit
    EXPECT_EQ(contents(file.tempPath()), "new bytes");
    file.commit();
  }
  EXPECT_EQ(contents(path("out")), "new bytes");
  EXPECT_EQ(namesIn(dir_), std::vector<std::string>{"out"});
}

TEST_F(FileTargetTest, AnAtomicFileLeftUncommittedTakesItsTemporaryWithIt) {
  std::ofstream(path("out")) << "old";
  {
    AtomicFile file(path("out"), "export");
    file.write("half of it");
    EXPECT_EQ(namesIn(dir_).size(), 2u);
  }
  EXPECT_EQ(contents(path("out")), "old");
  EXPECT_EQ(namesIn(dir_), std::vector<std::string>{"out"});
}

// What an interrupted write of the same target left (hidden, named by a writer long gone) goes before a write
// begins; another file's temporary stays.
TEST_F(FileTargetTest, AnAtomicFileRemovesWhatAnInterruptedWriteOfItsTargetLeft) {
  std::ofstream(path(".out.tmp.2147483646")) << "half of an old write";
  std::ofstream(path(".other.tmp.2147483646")) << "another file's";
  AtomicFile file(path("out"), "export");
  EXPECT_FALSE(fs::exists(path(".out.tmp.2147483646")));
  EXPECT_TRUE(fs::exists(path(".other.tmp.2147483646")));
}

// A name of 255 bytes, the longest a file system takes, fits; its temporary (".<name>.tmp.<pid>") would not,
// so it is shortened, and two such names that start alike still get temporaries of their own.
TEST_F(FileTargetTest, TheLongestNameGetsATemporaryThatFitsAndIsItsOwn) {
  // The cut falls inside the two bytes of "é": it goes before it.
  const std::string long_a = std::string(221, 'a') + "\xc3\xa9" + std::string(32, 'b');
  const std::string long_b = long_a.substr(0, 254) + "c";
  ASSERT_EQ(long_a.size(), 255u);
  const std::string temp_a = fs::path(tempPathFor(path(long_a))).filename().string();
  const std::string temp_b = fs::path(tempPathFor(path(long_b))).filename().string();
  EXPECT_LE(temp_a.size(), 255u);
  EXPECT_NE(temp_a, temp_b);
  EXPECT_EQ(temp_a.rfind("." + std::string(221, 'a') + "~", 0), 0u) << temp_a;
  for (const std::string& name : {long_a, long_b}) {
    AtomicFile file(path(name), "export");
    file.write(name.substr(254));
    file.commit();
  }
  EXPECT_EQ(contents(path(long_a)), "b");
  EXPECT_EQ(contents(path(long_b)), "c");
  // A write of it that was interrupted is found again by its shortened name.
  const std::string left = fs::path(tempPathFor(path(long_a))).parent_path() /
                           (temp_a.substr(0, temp_a.rfind('.') + 1) + "2147483646");
  std::ofstream(left) << "half of an old write";
  AtomicFile again(path(long_a), "export");
  EXPECT_FALSE(fs::exists(left));
  // One byte more is refused before anything is written (the rename would refuse it after).
  EXPECT_THAT([&] { AtomicFile file(path(long_a + "x"), "export"); },
              ThrowsMessage<DataError>(HasSubstr("its name is 256 bytes long, more than a file name may have (255)")));
}

TEST_F(FileTargetTest, AnAtomicFileThatCannotBeCreatedSaysWhereAndWhy) {
  EXPECT_THAT([&] { AtomicFile file(path("missing/out"), "checkpoint"); },
              ThrowsMessage<DataError>(HasSubstr("cannot write checkpoint " + path("missing/out") + ": creating " +
                                                 path("missing/.out.tmp."))));
}

// A write the file system refuses (here the file size limit, as a full disk would) fails naming the
// temporary file and the reason, and leaves the target as it was and no temporary behind.
TEST_F(FileTargetTest, AFailedWriteLeavesTheOldFileWhole) {
  std::ofstream(path("out")) << "old";
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  const auto previous = std::signal(SIGXFSZ, SIG_IGN);  // else the write past the limit kills the process
  rlimit small = saved;
  small.rlim_cur = 16;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::optional<std::string> error;
  try {
    AtomicFile file(path("out"), "export");
    file.write(std::string(100, 'x'));
    file.commit();
  } catch (const DataError& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, previous);
  ASSERT_TRUE(error.has_value()) << "a write past the size limit succeeded";
  EXPECT_THAT(*error, HasSubstr("cannot write export " + path("out") + ": writing " + path(".out.tmp.")));
  EXPECT_THAT(*error, HasSubstr(std::strerror(EFBIG)));
  EXPECT_EQ(contents(path("out")), "old");
  EXPECT_EQ(namesIn(dir_), std::vector<std::string>{"out"});
}

TEST_F(FileTargetTest, AFailedRenameRemovesTheTemporary) {
  fs::create_directories(path("out/inside"));  // a directory holding something: no file can be renamed over it
  EXPECT_THAT(
      [&] {
        AtomicFile file(path("out"), "export");
        file.write("bytes");
        file.commit();
      },
      ThrowsMessage<DataError>(HasSubstr("cannot write export " + path("out") + ": renaming " + path(".out.tmp."))));
  EXPECT_EQ(namesIn(dir_), std::vector<std::string>{"out"});
}

}  // namespace
}  // namespace ringtrain
