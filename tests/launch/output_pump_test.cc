// A rank's output pump: a log file that cannot be made (a full disk, no inodes) costs the copy, not the job;
// an unfinished line is not held back for good; a line redrawn with '\r' shows what it drew last, and while
// unfinished its latest drawing every second; long lines are cut between UTF-8 characters.
#include "output_pump.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "testing/command.h"

namespace ringtrain::launch {
namespace {

// Everything a pump writes to a console on a pipe, read back once `use` is done with the stream.
std::string consoleOf(const std::function<void(ConsoleStream&)>& use) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  std::string out;
  std::thread reader([&] {
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  });
  {
    ConsoleStream dest(fds[1], "test");
    use(dest);
  }  // the stream's destructor writes out what it queued
  ::close(fds[1]);
  reader.join();
  ::close(fds[0]);
  return out;
}

std::string readFile(const std::string& path) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

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
  Tail tail;
  const std::string out = consoleOf([&](ConsoleStream& dest) {
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
  });
  EXPECT_EQ(out, "[rank 2] Loading... \n[rank 2] done\n[rank 2] next\n");
  EXPECT_EQ(readFile(dir + "/stdout.log"), "Loading... done\nnext");
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

// A progress bar redrawn with '\r' faster than kPartialLineHold ("<bar>\r" each time) shows its latest
// drawing every kProgressEvery, each a line of its own, and its final state at its '\n'; the tail keeps one
// entry for it; the log gets the bytes as written.
TEST(OutputPump, AProgressBarRedrawnWithCarriageReturnsShowsItsLatestDrawingPeriodically) {
  Tail tail;
  const std::string dir = testing::makeTempDir("output_pump");
  const std::string out = consoleOf([&](ConsoleStream& dest) {
    OutputPump pump(1, dest, dir + "/stdout.log", &tail);
    tail.push_back("before");
    const auto t0 = std::chrono::steady_clock::now();
    const auto at = [&](int ms) { return t0 + std::chrono::milliseconds(ms); };
    pump.feed("10%\r", 4, at(0));
    pump.feed("20%\r", 4, at(400));
    pump.feed("30%\r", 4, at(800));
    EXPECT_EQ(tail, (Tail{"before"})) << "shown before kProgressEvery passed";
    pump.feed("40%\r", 4, at(1200));
    EXPECT_EQ(tail, (Tail{"before", "40%"}));
    pump.feed("50%\r60%\r", 8, at(1600));
    pump.feed("70%\r", 4, at(2100));  // 900 ms since the last showing
    pump.feed("80%\r", 4, at(2300));
    EXPECT_EQ(tail, (Tail{"before", "80%"})) << "the bar's entry in the tail is its latest drawing";
    pump.feed("100%\ndone\n", 10, at(2400));
    EXPECT_EQ(tail, (Tail{"before", "100%", "done"}));
  });
  EXPECT_EQ(out, "[rank 1] 40%\n[rank 1] 80%\n[rank 1] 100%\n[rank 1] done\n");
  EXPECT_EQ(readFile(dir + "/stdout.log"), "10%\r20%\r30%\r40%\r50%\r60%\r70%\r80%\r100%\ndone\n");
  std::filesystem::remove_all(dir);
}

// tqdm, curl and wget write "\r<bar>": the latest drawing is the text after the last '\r'. A bar that clears
// itself ("\r<spaces>\r") leaves its last drawing shown.
TEST(OutputPump, ABarThatDrawsAfterItsCarriageReturnShowsItsLatestDrawing) {
  Tail tail;
  const std::string out = consoleOf([&](ConsoleStream& dest) {
    OutputPump pump(0, dest, "", &tail);
    const auto t0 = std::chrono::steady_clock::now();
    const auto at = [&](int ms) { return t0 + std::chrono::milliseconds(ms); };
    pump.feed("\r 10%", 5, at(0));
    pump.feed("\r 20%", 5, at(600));
    pump.feed("\r 30%", 5, at(1100));
    pump.feed("\r 40%", 5, at(1500));
    const std::string cleared = "\r 50%\r      \r";  // drawn, then cleared
    pump.feed(cleared.data(), cleared.size(), at(1900));
    pump.finish();
  });
  EXPECT_EQ(out, "[rank 0]  30%\n[rank 0]  50%\n");
  EXPECT_EQ(tail, (Tail{" 50%"}));
}

// Passed on raw, a '\r' would send the terminal's cursor back over the "[rank R] " prefix: a line shows what it
// drew last. CRLF line ends lose their '\r'; a bar that stops (a pause, the end of output) shows its drawing.
TEST(OutputPump, ALineShowsWhatItDrewLast) {
  EXPECT_EQ(drawnLast("plain"), "plain");
  EXPECT_EQ(drawnLast("   "), "   ");
  EXPECT_EQ(drawnLast("hello\r"), "hello");
  EXPECT_EQ(drawnLast("10%\r20%\r\r"), "20%");
  EXPECT_EQ(drawnLast("bar\r   \r"), "bar");
  EXPECT_EQ(drawnLast("  \r  "), "  ");
  EXPECT_EQ(drawnLast("\r\r"), "");
  Tail tail;
  OutputPump pump(0, consoleOut(), "", &tail);
  const std::string crlf = "hello\r\n\r\nworld\r\n";
  pump.feed(crlf.data(), crlf.size());
  EXPECT_EQ(tail, (Tail{"hello", "", "world"}));
  pump.feed("45%\r", 4);
  pump.flushPartial(*pump.partialDue());
  pump.feed("\r\n", 2);  // nothing more to show: no empty line
  pump.feed("50%\r60%\r", 8);
  pump.finish();
  EXPECT_EQ(tail, (Tail{"hello", "", "world", "45%", "60%"}));
}

// A line over kMaxLineBytes is cut between characters: each piece is valid UTF-8 where the line is.
TEST(OutputPump, ALongLineIsCutBetweenUtf8Characters) {
  EXPECT_EQ(utf8PieceLength("abc", 8), 3u);
  EXPECT_EQ(utf8PieceLength("ab\xc3\xa9z", 3), 2u);           // é would be cut: it starts the next piece
  EXPECT_EQ(utf8PieceLength("a\xf0\x9f\x98\x80z", 4), 1u);    // a 4-byte character
  EXPECT_EQ(utf8PieceLength("a\xf0\x9f\x98\x80z", 5), 5u);    // it ends at the limit
  EXPECT_EQ(utf8PieceLength("a\x80\x80\x80\x80\x80", 4), 4u);  // not UTF-8: cut at the limit
  EXPECT_EQ(utf8PieceLength("ab\x80\x80\x80", 4), 4u);          // nor is a stray continuation after ASCII
  EXPECT_EQ(utf8PieceLength("\xc3\xa9\xc3\xa9", 3), 2u);
  Tail tail;
  const std::string out = consoleOf([&](ConsoleStream& dest) {
    OutputPump pump(0, dest, "", &tail);
    std::string line(kMaxLineBytes - 1, 'a');
    line += "\xc3\xa9" "b\n";
    pump.feed(line.data(), line.size());
    // A CRLF line of exactly the limit: its piece, and no empty line for the '\r' left after it.
    std::string crlf(kMaxLineBytes, 'c');
    crlf += "\r\n";
    pump.feed(crlf.data(), crlf.size());
    // A megabyte drawing overwritten by a short one: only the short one shows (no piece of the long one).
    const std::string drawing(kMaxLineBytes - 1, 'd');
    pump.feed(drawing.data(), drawing.size());
    pump.feed("\rnext\n", 6);
    // A drawing just over the limit that a '\r' ends, held whole until the line ends: still in pieces.
    const std::string start(kMaxLineBytes - 10, 'e'), end = std::string(20, 'e') + "\r\n";
    pump.feed(start.data(), start.size());
    pump.feed(end.data(), end.size());
  });
  const std::string prefix = "[rank 0] ";
  EXPECT_EQ(out, prefix + std::string(kMaxLineBytes - 1, 'a') + "\n" + prefix + "\xc3\xa9" "b\n" + prefix +
                     std::string(kMaxLineBytes, 'c') + "\n" + prefix + "next\n" + prefix +
                     std::string(kMaxLineBytes, 'e') + "\n" + prefix + std::string(10, 'e') + "\n");
  ASSERT_EQ(tail.size(), 5u);
  EXPECT_EQ(tail[0].size(), 2003u) << "the first piece, quoted in the tail up to 2000 bytes and '...'";
  EXPECT_EQ(tail[1], "\xc3\xa9" "b");
  EXPECT_EQ(tail[2], std::string(2000, 'c') + "...");
  EXPECT_EQ(tail[3], "next");
  EXPECT_EQ(tail[4], std::string(2000, 'e') + "...");
}

}  // namespace
}  // namespace ringtrain::launch
