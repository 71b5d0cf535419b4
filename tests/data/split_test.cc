#include "ringtrain/data/split.h"

#include <algorithm>
#include <cstdint>
#include <set>

#include <gtest/gtest.h>

#include "ringtrain/core/error.h"

namespace ringtrain::data {
namespace {

std::shared_ptr<const Corpus> numbered(int lines, int width) {
  std::vector<std::vector<std::string>> text;
  for (int l = 0; l < lines; ++l) {
    std::vector<std::string> line;
    for (int i = 0; i < width; ++i) line.push_back(std::to_string((l * 7 + i * 3) % 50));
    text.push_back(line);
  }
  return Corpus::fromLines(text);
}

TEST(Split, DeterministicDisjointAndSized) {
  auto c = numbered(1000, 6);
  SplitOptions o;
  o.eval_fraction = 0.2;
  o.protocol = EvalProtocol::kBasket;
  CorpusSplit a(*c, o), b(*c, o);
  EXPECT_EQ(a.heldOutLines(), b.heldOutLines());
  EXPECT_EQ(a.heldOutLines().size(), 200u);
  EXPECT_EQ(a.trainLines().size(), 800u);
  std::vector<int64_t> all = a.trainLines();
  all.insert(all.end(), a.heldOutLines().begin(), a.heldOutLines().end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(all[i], i);
  o.split_seed = 7;
  CorpusSplit other(*c, o);
  EXPECT_NE(other.heldOutLines(), a.heldOutLines());
}

TEST(Split, BasketQueriesHideOneDistinctItem) {
  auto c = Corpus::fromLines({{"a", "b", "c"}, {"a", "a"}, {"b", "c", "d", "b"}, {"x", "y"}});
  SplitOptions o;
  o.eval_fraction = 1.0;
  o.protocol = EvalProtocol::kBasket;
  // All lines held out: nothing left to train on.
  EXPECT_THROW(CorpusSplit s0(*c, o), DataError);
  o.eval_fraction = 0.75;
  CorpusSplit s(*c, o);
  EXPECT_EQ(s.trainLines().size(), 1u);
  const auto queries = heldOutQueries(*c, s);
  for (const EvalQuery& q : queries) {
    EXPECT_TRUE(s.isHeldOut(q.line));
    EXPECT_EQ(std::count(q.query.begin(), q.query.end(), q.target), 0);
    std::set<int32_t> distinct(q.query.begin(), q.query.end());
    EXPECT_EQ(distinct.size(), q.query.size());
    std::set<int32_t> line(c->line(q.line).begin(), c->line(q.line).end());
    EXPECT_EQ(q.query.size() + 1, line.size());
  }
  // The {a, a} basket has one distinct item: no query from it.
  for (const EvalQuery& q : queries) EXPECT_NE(q.line, 1);
  EXPECT_EQ(heldOutQueries(*c, s).size(), queries.size());
}

TEST(Split, WindowQueriesHideTheTailAndTrainOnThePrefix) {
  auto c = Corpus::fromLines({{"a", "b", "c", "d", "e"}, {"f", "g"}, {"a", "c", "a", "z"}});
  SplitOptions o;
  o.eval_fraction = 1.0;
  o.protocol = EvalProtocol::kWindow;
  o.hide_last = 2;
  CorpusSplit s(*c, o);
  ASSERT_EQ(s.heldOutLines().size(), 3u);
  // Line 0 trains on its first 3 items; {f, g} keeps 1 visible item (too few to train); line 2 keeps 2.
  EXPECT_EQ(s.trainTokens(*c, 0).size, 3);
  EXPECT_EQ(s.hiddenCount(*c, 1), 1);
  EXPECT_EQ(s.trainLines(), (std::vector<int64_t>{0, 2}));
  const auto queries = heldOutQueries(*c, s);
  const Vocabulary& v = c->vocab();
  std::vector<std::pair<int64_t, std::string>> got;
  for (const auto& q : queries) got.emplace_back(q.line, std::string(v.token(q.target)));
  // Line 2: the hidden "a" is already in the query and is skipped.
  EXPECT_EQ(got, (std::vector<std::pair<int64_t, std::string>>{{0, "d"}, {0, "e"}, {1, "g"}, {2, "z"}}));
  EXPECT_EQ(queries[0].query, (std::vector<int32_t>{v.id("a"), v.id("b"), v.id("c")}));
  EXPECT_EQ(queries[3].query, (std::vector<int32_t>{v.id("a"), v.id("c")}));
}

// A hidden item that repeats ("... d d") is one query, not two that would count it twice.
TEST(Split, WindowQueriesTakeARepeatedHiddenItemOnce) {
  auto c = Corpus::fromLines({{"a", "b", "c", "d", "d"}, {"a", "b", "c", "e", "e"}});
  SplitOptions o;
  o.eval_fraction = 0.5;
  o.protocol = EvalProtocol::kWindow;
  o.hide_last = 2;
  CorpusSplit s(*c, o);
  ASSERT_EQ(s.heldOutLines().size(), 1u);
  const int64_t held = s.heldOutLines()[0];
  const auto queries = heldOutQueries(*c, s);
  const Vocabulary& v = c->vocab();
  std::vector<std::string> targets;
  for (const auto& q : queries) targets.emplace_back(v.token(q.target));
  EXPECT_EQ(targets, std::vector<std::string>{held == 0 ? "d" : "e"});
}

TEST(Split, TrainCountsExcludeHeldOutTokens) {
  auto c = Corpus::fromLines({{"a", "b"}, {"c", "d"}, {"a", "c"}, {"b", "d"}});
  SplitOptions o;
  o.eval_fraction = 0.5;
  o.protocol = EvalProtocol::kBasket;
  CorpusSplit s(*c, o);
  const auto counts = trainCounts(*c, s);
  int64_t total = 0;
  for (auto n : counts) total += n;
  EXPECT_EQ(total, 4);
}

// Only what training reads counts: a repeat in a held-out line's hidden tail is not one.
TEST(Split, ARepeatCountsOnlyInTheTokensTrainingReads) {
  auto c = Corpus::fromLines({{"a", "b", "c", "a"}, {"d", "e"}, {"f", "g"}, {"h", "i"}, {"j", "k"}, {"l", "m"}});
  std::set<bool> seen;
  for (int64_t seed = 1; seed <= 20; ++seed) {
    SplitOptions o;
    o.eval_fraction = 0.5;
    o.split_seed = seed;
    CorpusSplit s(*c, o);  // window protocol: a held-out line trains on "a b c"
    EXPECT_EQ(aTrainLineRepeatsAnItem(*c, s), !s.isHeldOut(0)) << "split seed " << seed;
    seen.insert(s.isHeldOut(0));
  }
  EXPECT_EQ(seen.size(), 2u) << "the seeds never held line 0 out, or always did";
  auto distinct = Corpus::fromLines({{"a", "b", "c"}, {"c", "a"}});
  SplitOptions all;
  all.eval_fraction = 0;
  EXPECT_FALSE(aTrainLineRepeatsAnItem(*distinct, CorpusSplit(*distinct, all)));
}

}  // namespace
}  // namespace ringtrain::data
