#include "ringtrain/data/corpus.h"

#include <fcntl.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <gtest/gtest.h>

#include "data_testing.h"
#include "ringtrain/core/error.h"
#include "testing/captured_log.h"

namespace ringtrain::data {
namespace {

using testing_helpers::writeFile;

std::string dataErrorOf(const CorpusLoadOptions& o) {
  try {
    Corpus::load(o);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

CorpusLoadOptions opts(const std::string& path) {
  CorpusLoadOptions o;
  o.corpus = path;
  return o;
}

TEST(Corpus, ParsesLinesAndOrdersVocabularyByCount) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "c.txt", "a b c\n  b\tc  \r\n\nc d\nz\n");
  auto o = opts(path);
  o.cache = false;
  auto c = Corpus::load(o);
  // Lines with < 2 items ("", "z") are dropped.
  ASSERT_EQ(c->numLines(), 3);
  EXPECT_EQ(c->stats().source_lines, 5);
  EXPECT_EQ(c->stats().short_lines, 2);
  EXPECT_EQ(c->numTokens(), 7);
  const Vocabulary& v = c->vocab();
  ASSERT_EQ(v.size(), 5);  // z appears only in a dropped line, but it is in the file: it keeps its id
  EXPECT_EQ(v.token(0), "c");
  EXPECT_EQ(v.count(0), 3);
  EXPECT_EQ(v.token(1), "b");
  EXPECT_EQ(v.id("a"), 2);
  EXPECT_EQ(v.id("nope"), -1);
  const LineView l1 = c->line(1);
  ASSERT_EQ(l1.size, 2);
  EXPECT_EQ(v.token(l1[0]), "b");
  EXPECT_EQ(v.token(l1[1]), "c");
  EXPECT_EQ(v.totalCount(), 8);
  EXPECT_EQ(v.count(v.id("z")), 1);
  std::filesystem::remove_all(dir);
}

TEST(Corpus, MinCountDropsRareItems) {
  auto c = Corpus::fromLines({{"a", "b", "x"}, {"a", "b"}, {"a", "y"}}, /*min_count=*/2);
  EXPECT_EQ(c->vocab().size(), 2);
  EXPECT_EQ(c->numLines(), 2);  // {a, y} lost y and is too short
  EXPECT_EQ(c->stats().dropped_tokens, 2);
}

TEST(Corpus, UnreadableFileNamesIt) {
  const std::string msg = dataErrorOf(opts("/nonexistent/corpus.txt"));
  EXPECT_NE(msg.find("/nonexistent/corpus.txt"), std::string::npos) << msg;
}

TEST(Corpus, EmptyFileNamesFileAndLine) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "empty.txt", "");
  const std::string msg = dataErrorOf(opts(path));
  EXPECT_NE(msg.find(path + ":1: empty corpus"), std::string::npos) << msg;
  const std::string blank = writeFile(dir, "blank.txt", "\n\n  \n");
  const std::string msg2 = dataErrorOf(opts(blank));
  EXPECT_NE(msg2.find(blank + ": no usable lines"), std::string::npos) << msg2;
  std::filesystem::remove_all(dir);
}

TEST(Corpus, BadTokenNamesFileAndLine) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string good = "a b c\n";
  const std::string path = writeFile(dir, "bad.txt", good + good + "a \xff\xfe b\n" + good + "x\x01y z\n" + good);
  const std::string msg = dataErrorOf(opts(path));
  EXPECT_NE(msg.find(path + ":3: token 2 is not valid text: invalid UTF-8"), std::string::npos) << msg;

  auto o = opts(path);
  o.skip_bad_lines = true;
  auto c = Corpus::load(o);
  EXPECT_EQ(c->stats().bad_lines, 2);
  EXPECT_EQ(c->numLines(), 4);
  // Valid multi-byte UTF-8 is fine.
  const std::string utf8 = writeFile(dir, "utf8.txt", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n");
  EXPECT_EQ(Corpus::load(opts(utf8))->vocab().size(), 3);
  std::filesystem::remove_all(dir);
}

// A Unicode space (U+00A0 from a spreadsheet, U+3000) does not separate items, as in word2vec; the tokens
// holding one are counted and said aloud, on a cache hit too, so that a corpus meant otherwise is noticed.
TEST(Corpus, TokensHoldingAUnicodeSpaceAreKeptAndSaidAloud) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "nbsp.txt",
                                     "a b\n"
                                     "x\xc2\xa0y z\n"                        // one token, NBSP inside
                                     "p\xe3\x80\x80q r\xc2\xa0s\n"        // two: U+3000 and NBSP
                                     "caf\xc3\xa9 \xe2\x82\xac\n");     // other non-ASCII: no space
  testing::CapturedLog logged;
  auto c = Corpus::load(opts(path));
  EXPECT_EQ(c->stats().unicode_space_tokens, 3);
  EXPECT_EQ(c->vocab().size(), 8);
  EXPECT_GE(c->vocab().id("x\xc2\xa0y"), 0);
  auto cached = Corpus::load(opts(path));
  EXPECT_TRUE(cached->stats().from_cache);
  EXPECT_EQ(cached->stats().unicode_space_tokens, 3);
  const std::string text = logged.text();
  EXPECT_NE(text.find("3 token(s) read hold a Unicode space or invisible character (line 2, token 1: U+00A0)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("counted when the cache"), std::string::npos) << text;
  const std::string plain = writeFile(dir, "plain.txt", "a b\ncaf\xc3\xa9 \xe2\x82\xac\n");
  EXPECT_EQ(Corpus::load(opts(plain))->stats().unicode_space_tokens, 0);
  // Characters that show as nothing: a byte order mark inside the file (two files joined, each starting with
  // one) and a zero-width space. The mark at the very start is the file's own and is not read as a token's.
  const std::string joined = writeFile(dir, "joined.txt", "\xef\xbb\xbf" "a b\n\xef\xbb\xbf" "a c\nd\xe2\x80\x8b" "e f\n");
  const auto hidden = Corpus::load(opts(joined));
  EXPECT_EQ(hidden->stats().unicode_space_tokens, 2);
  EXPECT_NE(logged.text().find("2 token(s) read hold a Unicode space or invisible character (line 2, token 1: U+FEFF)"),
            std::string::npos)
      << logged.text();
  std::filesystem::remove_all(dir);
}

TEST(Corpus, ControlCharacterNamesLine) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "ctl.txt", "a b\nx\x01y z\n");
  const std::string msg = dataErrorOf(opts(path));
  EXPECT_NE(msg.find(path + ":2: token 1 is not valid text: control character 0x01"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(Corpus, OverlongLineNamesLineOrIsSkipped) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  std::string long_line;
  for (int i = 0; i < 300; ++i) long_line += "item" + std::to_string(i) + " ";
  const std::string path = writeFile(dir, "long.txt", "a b\n" + long_line + "\nc d\n");
  auto o = opts(path);
  o.max_line_bytes = 256;
  o.cache = false;
  const std::string msg = dataErrorOf(o);
  EXPECT_NE(msg.find(path + ":2: line longer than 256 bytes"), std::string::npos) << msg;
  o.skip_bad_lines = true;
  auto c = Corpus::load(o);
  EXPECT_EQ(c->stats().bad_lines, 1);
  EXPECT_EQ(c->numLines(), 2);
  EXPECT_EQ(c->stats().source_lines, 3);
  std::filesystem::remove_all(dir);
}

TEST(Corpus, CacheIsReusedAndInvalidated) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "c.txt", "a b c\nb c\nc d e f\n");
  auto first = Corpus::load(opts(path));
  EXPECT_FALSE(first->stats().from_cache);
  EXPECT_EQ(first->stats().cache_path, path + ".rtc");
  ASSERT_TRUE(std::filesystem::exists(path + ".rtc"));
  auto second = Corpus::load(opts(path));
  EXPECT_TRUE(second->stats().from_cache);
  EXPECT_EQ(second->tokens(), first->tokens());
  EXPECT_EQ(second->offsets(), first->offsets());
  EXPECT_EQ(second->vocab().arena(), first->vocab().arena());
  EXPECT_EQ(second->vocab().counts(), first->vocab().counts());
  EXPECT_EQ(second->stats().source_lines, 3);

  // Different min_count: a different cache key.
  auto o = opts(path);
  o.min_count = 2;
  EXPECT_FALSE(Corpus::load(o)->stats().from_cache);

  // Same size, new content: the cache is invalidated.
  writeFile(dir, "c.txt", "x y z\nb c\nc d e f\n");
  auto third = Corpus::load(opts(path));
  EXPECT_FALSE(third->stats().from_cache);
  EXPECT_GE(third->vocab().id("x"), 0);

  // An edit in the middle of a large file, size and modification time put back (touch -r, tar): the inode's
  // change time, which cannot be put back, tells.
  std::string big;
  for (int i = 0; i < 50000; ++i) big += "a b c\n";  // 300 KB: the middle is outside the hashed head and tail
  const std::string big_path = writeFile(dir, "big.txt", big);
  EXPECT_FALSE(Corpus::load(opts(big_path))->stats().from_cache);
  EXPECT_TRUE(Corpus::load(opts(big_path))->stats().from_cache);
  struct stat before {};
  ASSERT_EQ(::stat(big_path.c_str(), &before), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // past the kernel's coarse timestamp tick
  big.replace(150000, 5, "x y z");
  writeFile(dir, "big.txt", big);
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, big_path.c_str(), times, 0), 0);
  auto edited = Corpus::load(opts(big_path));
  EXPECT_FALSE(edited->stats().from_cache);
  EXPECT_GE(edited->vocab().id("x"), 0);

  // A corrupt cache is re-parsed, not trusted.
  writeFile(dir, "c.txt.rtc", "RTCORPUS garbage");
  EXPECT_FALSE(Corpus::load(opts(path))->stats().from_cache);
  EXPECT_TRUE(Corpus::load(opts(path))->stats().from_cache);

  // Nor one whose bytes changed into another valid corpus: the big file's last token (id 0 to 3 alike) made
  // another item; only the payload's checksum tells.
  const std::vector<int32_t> tokens = Corpus::load(opts(big_path))->tokens();
  {
    std::fstream cache(big_path + ".rtc", std::ios::in | std::ios::out | std::ios::binary);
    const int32_t other = tokens.back() == 0 ? 1 : 0;
    cache.seekp(-static_cast<std::streamoff>(8 + 8 + sizeof(int32_t)), std::ios::end);  // magic, checksum, last token
    cache.write(reinterpret_cast<const char*>(&other), sizeof other);
  }
  const auto reparsed = Corpus::load(opts(big_path));
  EXPECT_FALSE(reparsed->stats().from_cache) << "a changed cache was trusted";
  EXPECT_EQ(reparsed->tokens(), tokens);
  // A cache cut short (a full disk, a truncated copy) is parsed again, and said to be (it was silent).
  EXPECT_TRUE(Corpus::load(opts(big_path))->stats().from_cache);
  std::filesystem::resize_file(big_path + ".rtc", 100);
  testing::CapturedLog logged;
  const auto after_cut = Corpus::load(opts(big_path));
  EXPECT_FALSE(after_cut->stats().from_cache);
  EXPECT_EQ(after_cut->tokens(), tokens);
  EXPECT_NE(logged.text().find(big_path + ".rtc: the corpus cache ends before its end marker (cut short"),
            std::string::npos)
      << logged.text();
  std::filesystem::remove_all(dir);
}

// A file at <corpus>.rtc that is not a cache of ours (a user's notes, a link) is left alone, not replaced.
TEST(Corpus, AForeignFileWhereTheCacheGoesIsLeftAlone) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "c.txt", "a b c\nb c\n");
  writeFile(dir, "c.txt.rtc", "my notes\n");
  EXPECT_EQ(Corpus::load(opts(path))->numLines(), 2);
  std::ifstream notes(path + ".rtc");
  std::string text((std::istreambuf_iterator<char>(notes)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "my notes\n");
  std::filesystem::remove_all(dir);
}

// What a killed cache write left (its process gone, over an hour old) is removed by the next write; a
// pipe as corpus is named as one.
TEST(Corpus, AbandonedCacheWritesAreRemovedAndAPipeIsNamed) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "c.txt", "a b c\nb c\n");
  const pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ASSERT_GT(gone, 0);
  ::waitpid(gone, nullptr, 0);
  const std::string stale = writeFile(dir, "c.txt.rtc.tmp." + std::to_string(gone) + ".1f", "half a cache");
  const std::string fresh = writeFile(dir, "c.txt.rtc.tmp." + std::to_string(gone) + ".2e", "half a cache");
  const struct timespec old_times[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, stale.c_str(), old_times, 0), 0);
  EXPECT_FALSE(Corpus::load(opts(path))->stats().from_cache);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(fresh)) << "younger than an hour: maybe another host's writer";
  const std::string fifo = dir + "/fifo.txt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // With nobody writing it (opening it to read used to wait for a writer forever), and with a writer.
  for (const bool writer : {false, true}) {
    const int keep_open = writer ? ::open(fifo.c_str(), O_RDWR | O_NONBLOCK) : -1;
    try {
      Corpus::load(opts(fifo));
      ADD_FAILURE() << "a FIFO was read as a corpus";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("is not a regular file (a pipe or device)"), std::string::npos) << e.what();
    }
    if (keep_open >= 0) ::close(keep_open);
  }
  std::filesystem::remove_all(dir);
}

// A byte order mark is not part of the first token; lines ended by CR alone are refused, not read as one.
TEST(Corpus, ByteOrderMarkIsDroppedAndCarriageReturnLinesAreRefused) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  auto bom = Corpus::load(opts(writeFile(dir, "bom.txt", "\xEF\xBB\xBF" "1 2 3\n2 1\n")));
  EXPECT_GE(bom->vocab().id("1"), 0);
  EXPECT_EQ(bom->vocab().size(), 3);
  const std::string cr = writeFile(dir, "cr.txt", "1 2 3\r2 1\r3 1\r");
  try {
    Corpus::load(opts(cr));
    ADD_FAILURE() << "CR-only lines were read as one session";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("cr.txt:1: lines end in CR alone"), std::string::npos) << e.what();
  }
  // Lines ended by CR alone in only part of a file (the file ends in LF, or such lines were appended to a
  // LF file) are a bad line each, named; a CR of a CRLF end, even with blanks after it, is none.
  EXPECT_NE(dataErrorOf(opts(writeFile(dir, "crlf_end.txt", "1 2 3\r2 1\r3 1\r\n"))).find(
                "crlf_end.txt:1: a CR inside the line: lines that end in CR alone"),
            std::string::npos);
  EXPECT_NE(dataErrorOf(opts(writeFile(dir, "appended.txt", "1 2\n2 3\n3 1\r1 3\r2 1\r"))).find(
                "appended.txt:3: a CR inside the line"),
            std::string::npos);
  auto skipping = opts(writeFile(dir, "skipped.txt", "1 2\n2 3\r3 1\n1 3\r\n2 1 \r \n"));
  skipping.skip_bad_lines = true;
  auto skipped = Corpus::load(skipping);
  EXPECT_EQ(skipped->stats().bad_lines, 1);
  EXPECT_EQ(skipped->numLines(), 3);
  std::filesystem::remove_all(dir);
}

// What fails as "invalid UTF-8" or "control character" says what it likely is: an 8-bit encoding names the
// byte that is not UTF-8 (not the one after it) and how to convert; a compressed file says it is one.
TEST(Corpus, Latin1AndCompressedCorporaAreSaidToBeSo) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string latin1 = dataErrorOf(opts(writeFile(dir, "latin1.txt", "tea r\xe9sum\xe9\nx y\n")));
  EXPECT_NE(latin1.find("latin1.txt:1: token 2 is not valid text: invalid UTF-8 byte 0xe9 (text in Latin-1"),
            std::string::npos) << latin1;
  const std::string gzip = dataErrorOf(opts(writeFile(dir, "c.gz", std::string("\x1f\x8b\x08\0\0\0", 6))));
  EXPECT_NE(gzip.find("c.gz:1: the file is gzip-compressed"), std::string::npos) << gzip;
  // An item that only starts like bzip2's magic is an item.
  EXPECT_EQ(Corpus::load(opts(writeFile(dir, "bz.txt", "BZh9 a\na b\n")))->vocab().size(), 3);
  std::filesystem::remove_all(dir);
}

TEST(Corpus, UnwritableCacheOnlyWarns) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "c.txt", "a b c\n");
  // A directory where the cache file should go: the cache can be neither read nor renamed into place
  // (this also works as root, whom directory permissions do not stop).
  std::filesystem::create_directory(path + ".rtc");
  auto c = Corpus::load(opts(path));
  EXPECT_EQ(c->numLines(), 1);
  EXPECT_FALSE(c->stats().from_cache);
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "left a temporary: " << entry.path();
  }
  // A read-only directory (mode bits; honoured even for root) is left untouched.
  std::filesystem::remove(path + ".rtc");
  ::chmod(dir.c_str(), 0555);
  auto d = Corpus::load(opts(path));
  EXPECT_EQ(d->numLines(), 1);
  EXPECT_EQ(d->stats().cache_path, "");
  EXPECT_FALSE(std::filesystem::exists(path + ".rtc"));
  ::chmod(dir.c_str(), 0755);
  std::filesystem::remove_all(dir);
}

TEST(Corpus, ItemsTableAttachesNamesAndCategories) {
  const std::string dir = testing::makeTempDir("rt_corpus");
  const std::string path = writeFile(dir, "seq.txt", "a b c\nb c\n");
  writeFile(dir, "items.tsv", "id\tkey\tname\tcategory\na\tKA\tApple\tfruit\nb\tKB\tBread\t\nq\tKQ\tunused\tx\nc\tKC\tCherry\tfruit\n");
  auto c = Corpus::load(opts(path));
  const ItemTable& items = c->items();
  ASSERT_FALSE(items.empty());
  const int32_t a = c->vocab().id("a"), b = c->vocab().id("b"), cc = c->vocab().id("c");
  EXPECT_EQ(items.name(a), "Apple");
  EXPECT_EQ(items.key(a), "KA");
  EXPECT_EQ(items.category(a), "fruit");
  EXPECT_EQ(items.categoryId(b), -1);
  EXPECT_EQ(items.categoryId(cc), items.categoryId(a));
  EXPECT_EQ(items.numCategories(), 1);

  writeFile(dir, "items.tsv", "id\tkey\tname\tcategory\na\tKA\n");
  const std::string msg = dataErrorOf(opts(path));
  EXPECT_NE(msg.find(dir + "/items.tsv:2: expected 4 tab-separated fields"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(Corpus, OnlineRetailLoads) {
  // ../shared beside the checkout (or beside the worktree folder, for a git worktree under wt/).
  std::string path = testing::sourcePath("../shared/data/onlineretail/sequences.txt");
  if (!std::filesystem::exists(path)) path = testing::sourcePath("../../shared/data/onlineretail/sequences.txt");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  // The shared folder is read-only (mode r-x): the loader must not write its cache there.
  auto o = opts(path);
  const bool had_cache = std::filesystem::exists(path + ".rtc");
  auto c = Corpus::load(o);
  EXPECT_GT(c->numLines(), 15000);
  EXPECT_LE(c->numLines(), 19773);
  EXPECT_EQ(c->vocab().size(), 3798);
  EXPECT_EQ(c->stats().source_lines, 19773);
  EXPECT_EQ(c->stats().bad_lines, 0);
  EXPECT_GT(c->items().rowsMatched(), 3700);
  if (!had_cache) EXPECT_FALSE(std::filesystem::exists(path + ".rtc"));
}

}  // namespace
}  // namespace ringtrain::data
