// A rank's output pump: a log file that cannot be made (a full disk, no inodes) costs the copy, not the job;
// an unfinished line is not held back for good.
#include "output_pump.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "testing/command.h"

namespace ringtrain::launch {
namespace {

TEST(OutputPump, ALogFileThatCannotBeCreatedIsDoneWithout) {
  Tail tail;
  std::unique_ptr<OutputPump> pump;
  ASSERT_NO_THROW(pump = std::make_unique<OutputPump>(3, consoleOut(), "/nonexistent-ringrun-dir/stdout.log", &tail));
  const std::string line = "still passed on\n";
  pump->feed(line.data(), line.size());
  pump->finish();
  ASSERT_FALSE(tail.empty());
  EXPECT_EQ(tail.back(), "still passed on");
}

// A prompt or a progress line that ends later goes out once held kPartialLineHold, as a line of its own; the
// rest follows, prefixed again. The log file gets the bytes as written.
TEST(OutputPump, AnUnfinishedLineGoesOutOnceHeldAndTheRestFollows) {
  const std::string dir = testing::makeTempDir("output_pump");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  Tail tail;
  {
    ConsoleStream dest(fds[1], "test");
    OutputPump pump(2, dest, dir + "/stdout.log", &tail);
    EXPECT_FALSE(pump.partialDue());
    const auto fed = std::chrono::steady_clock::now();
    pump.feed("Loading... ", 11);
    const auto due = pump.partialDue();
    ASSERT_TRUE(due.has_value());
    EXPECT_GE(*due - fed, kPartialLineHold);
    pump.flushPartial(*due - std::chrono::milliseconds(1));
    EXPECT_TRUE(tail.empty()) << "went out before it was due";
    pump.flushPartial(*due);
    EXPECT_FALSE(pump.partialDue());
    pump.feed("done\nnext", 9);
    pump.finish();
  }  // the stream's destructor writes out what it queued
  ::close(fds[1]);
  std::string out;
  char buf[256];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  EXPECT_EQ(out, "[rank 2] Loading... \n[rank 2] done\n[rank 2] next\n");
  std::stringstream log;
  log << std::ifstream(dir + "/stdout.log").rdbuf();
  EXPECT_EQ(log.str(), "Loading... done\nnext");
  std::filesystem::remove_all(dir);
}

// The hold counts from the last byte: a long line still arriving is not cut, and a finished one clears it.
TEST(OutputPump, MoreOfTheLineRestartsTheHold) {
  Tail tail;
  OutputPump pump(0, consoleOut(), "", &tail);
  pump.feed("first half", 10);
  const auto first_due = pump.partialDue();
  ASSERT_TRUE(first_due.has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  pump.feed(", second half", 13);
  const auto second_due = pump.partialDue();
  ASSERT_TRUE(second_due.has_value());
  EXPECT_GT(*second_due, *first_due);
  pump.flushPartial(*first_due);
  EXPECT_TRUE(tail.empty()) << "cut while the line was still arriving";
  pump.feed("\n", 1);
  EXPECT_FALSE(pump.partialDue());
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(tail.back(), "first half, second half");
}

// A line whose start went out alone and whose rest is only its '\n' adds no empty line; an empty line the
// rank prints is still one.
TEST(OutputPump, ANewlineAloneAfterAStartSentAloneAddsNoEmptyLine) {
  Tail tail;
  OutputPump pump(0, consoleOut(), "", &tail);
  pump.feed("prompt> ", 8);
  pump.flushPartial(*pump.partialDue());
  pump.feed("\n\nnext\n", 7);
  EXPECT_EQ(tail, (Tail{"prompt> ", "", "next"}));
}

}  // namespace
}  // namespace ringtrain::launch
