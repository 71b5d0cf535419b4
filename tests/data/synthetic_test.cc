#include "ringtrain/data/synthetic.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ringtrain/data/corpus.h"
#include "testing/command.h"

namespace ringtrain::data {
namespace {

config::SyntheticOptions small() {
  config::SyntheticOptions o;
  o.items = 500;
  o.categories = 5;
  o.sessions = 2000;
  o.session_length = 6;
  o.alpha = 0.9;
  return o;
}

TEST(Synthetic, SessionsStayInTheirHomeCategory) {
  const std::string dir = testing::makeTempDir("rt_synth");
  const SyntheticResult r = generateSynthetic(small(), 3, dir);
  EXPECT_EQ(r.sessions, 2000);
  CorpusLoadOptions o;
  o.corpus = r.sequences_path;
  o.cache = false;
  auto c = Corpus::load(o);
  EXPECT_EQ(c->numLines(), 2000);
  EXPECT_EQ(c->numTokens(), r.tokens);
  ASSERT_EQ(c->items().numCategories(), 5);
  // The planted category is in items.tsv; consecutive items mostly share it (alpha 0.9, 5 categories:
  // P(same) ~ 0.9^2 + noise), far above chance (0.2).
  int64_t same = 0, total = 0;
  for (int64_t l = 0; l < c->numLines(); ++l) {
    const LineView v = c->line(l);
    for (int64_t i = 1; i < v.size; ++i) {
      EXPECT_EQ(c->items().category(v[i]), "c" + std::to_string(plantedCategory(
                                                    std::stoll(std::string(c->vocab().token(v[i]))), 5)));
      same += c->items().categoryId(v[i - 1]) == c->items().categoryId(v[i]);
      ++total;
    }
  }
  EXPECT_GT(static_cast<double>(same) / total, 0.7);
  // Deterministic.
  const std::string dir2 = testing::makeTempDir("rt_synth");
  generateSynthetic(small(), 3, dir2, false);
  std::ifstream a(r.sequences_path), b(dir2 + "/sequences.txt");
  std::string ta((std::istreambuf_iterator<char>(a)), {}), tb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(ta, tb);
  EXPECT_FALSE(std::filesystem::exists(dir2 + "/items.tsv"));
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(dir2);
}

// What a generation killed before its rename left (hidden, named by its writer's pid, long gone) goes with
// the next generation; nothing of this one's stays beside the files.
TEST(Synthetic, AGenerationRemovesWhatAKilledOneLeft) {
  const std::string dir = testing::makeTempDir("rt_synth");
  const std::string stale = dir + "/.sequences.txt.tmp.2147483646";
  std::ofstream(stale) << "1 2 3\n";
  generateSynthetic(small(), 3, dir);
  EXPECT_FALSE(std::filesystem::exists(stale));
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"items.tsv", "sequences.txt", "synthetic.stamp"}));
  std::filesystem::remove_all(dir);
}

TEST(Synthetic, JobWithoutCorpusGeneratesOnce) {
  const std::string dir = testing::makeTempDir("rt_synth");
  config::JobConfig job;
  job.synthetic = small();
  job.run.output_dir = dir;
  auto c1 = loadJobCorpus(job);
  EXPECT_FALSE(c1->stats().from_cache);
  auto c2 = loadJobCorpus(job);  // same options: the files and their cache are reused
  EXPECT_TRUE(c2->stats().from_cache);
  EXPECT_EQ(c1->tokens(), c2->tokens());
  job.synthetic.sessions = 100;
  EXPECT_EQ(loadJobCorpus(job)->numLines(), 100);
  std::filesystem::remove_all(dir);
}

TEST(Synthetic, GenDataCommandWritesBothFiles) {
  const std::string dir = testing::makeTempDir("rt_synth");
  auto r = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir, "--items", "1000",
                                "--sessions", "50", "--categories", "4"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir + "/sequences.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/items.tsv"));
  auto bad = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir, "--alpha", "2"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  // A link to sequences.txt is written through, not replaced (as every file ringtrain writes).
  std::filesystem::rename(dir + "/sequences.txt", dir + "/real.txt");
  std::filesystem::create_symlink("real.txt", dir + "/sequences.txt");
  auto linked = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir, "--items", "300",
                                     "--sessions", "60"});
  ASSERT_TRUE(linked.ok()) << linked.err;
  EXPECT_TRUE(std::filesystem::is_symlink(dir + "/sequences.txt"));
  std::ifstream real(dir + "/real.txt");
  int lines = 0;
  for (std::string line; std::getline(real, line);) ++lines;
  EXPECT_EQ(lines, 60);
  // Generated again without items: the old items.tsv (other categories) goes, said.
  auto again = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir, "--items", "300",
                                    "--sessions", "50", "--no-items"});
  ASSERT_TRUE(again.ok()) << again.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/items.tsv"));
  EXPECT_NE(again.err.find("removed the items.tsv of an earlier generation"), std::string::npos) << again.err;
  // An items.tsv gen-data did not write is somebody's: refused before anything is written, and kept.
  const std::string mine = "id\tkey\tname\tcategory\n5\tABC\tHand-curated mug\tkitchen\n";
  std::ofstream(dir + "/items.tsv") << mine;
  const auto corpus = [&] {
    std::ifstream in(dir + "/real.txt");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string before = corpus();
  for (const bool no_items : {true, false}) {
    SCOPED_TRACE(no_items ? "--no-items" : "with items");
    std::vector<std::string> command = {testing::binPath("ringtrain"), "gen-data", "--out", dir, "--items", "300",
                                        "--sessions", "40"};
    if (no_items) command.push_back("--no-items");
    auto kept = testing::runCommand(command);
    EXPECT_EQ(kept.exit_code, 2) << kept.err;
    EXPECT_NE(kept.err.find("is not an items.tsv that gen-data wrote"), std::string::npos) << kept.err;
    std::ifstream items(dir + "/items.tsv");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(items), {}), mine);
    EXPECT_EQ(corpus(), before) << "the corpus was replaced";
  }
  std::filesystem::remove_all(dir);
}

// A sequences.txt gen-data did not write (no stamp, no gen-data items.tsv beside it) is somebody's corpus:
// refused before anything is written, and so is one a link of that name leads to. What gen-data wrote
// with --no-items is its own (the stamp says so).
TEST(Synthetic, GenDataKeepsACorpusItDidNotWrite) {
  const std::string dir = testing::makeTempDir("rt_synth");
  const std::string mine = "my own corpus line\nanother line\n";
  std::ofstream(dir + "/corpus.txt") << mine;
  const auto corpus = [&] {
    std::ifstream in(dir + "/corpus.txt");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::filesystem::create_directories(dir + "/plain");
  std::filesystem::copy_file(dir + "/corpus.txt", dir + "/plain/sequences.txt");
  std::filesystem::create_directories(dir + "/linked");
  std::filesystem::create_symlink("../corpus.txt", dir + "/linked/sequences.txt");
  for (const std::string sub : {"plain", "linked"}) {
    SCOPED_TRACE(sub);
    auto r = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir + "/" + sub, "--items",
                                  "100", "--sessions", "10", "--categories", "5"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(sub + "/sequences.txt is not a corpus that gen-data wrote"), std::string::npos) << r.err;
    EXPECT_EQ(corpus(), mine) << "the user's corpus was replaced";
    EXPECT_FALSE(std::filesystem::exists(dir + "/" + sub + "/items.tsv"));
  }
  std::ifstream plain(dir + "/plain/sequences.txt");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(plain), {}), mine);
  // gen-data's own, without items: generated again.
  for (int i = 0; i < 2; ++i) {
    auto r = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir + "/own", "--items", "100",
                                  "--sessions", std::to_string(10 + i), "--categories", "5", "--no-items"});
    ASSERT_TRUE(r.ok()) << r.err;
  }
  std::ifstream own(dir + "/own/sequences.txt");
  int lines = 0;
  for (std::string line; std::getline(own, line);) ++lines;
  EXPECT_EQ(lines, 11);
  // A link put in a generated directory: the stamp beside the link does not vouch for the file it leads to
  // (QA: gen-data wrote its corpus over that file).
  std::filesystem::remove(dir + "/own/sequences.txt");
  std::filesystem::create_symlink("../corpus.txt", dir + "/own/sequences.txt");
  auto into_link = testing::runCommand({testing::binPath("ringtrain"), "gen-data", "--out", dir + "/own", "--items",
                                        "100", "--sessions", "12", "--categories", "5", "--no-items"});
  EXPECT_EQ(into_link.exit_code, 2) << into_link.err;
  EXPECT_NE(into_link.err.find("own/sequences.txt is a link to " + std::filesystem::weakly_canonical(dir).string() +
                               "/corpus.txt, which has no synthetic.stamp beside it"),
            std::string::npos)
      << into_link.err;
  EXPECT_EQ(corpus(), mine) << "the user's corpus was replaced";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringtrain::data
