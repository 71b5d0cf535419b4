#include "ringtrain/data/pair_generator.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"

namespace ringtrain::data {
namespace {

TEST(AliasSampler, MatchesTheDistribution) {
  const std::vector<double> w = {1, 2, 3, 4, 0, 10};
  AliasSampler s(w);
  Xoshiro256 rng(123);
  const int n = 400000;
  std::vector<int64_t> hits(w.size(), 0);
  for (int i = 0; i < n; ++i) ++hits[s.sample(rng)];
  EXPECT_EQ(hits[4], 0);
  double chi2 = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double expect = n * w[i] / 20.0;
    if (expect > 0) chi2 += (hits[i] - expect) * (hits[i] - expect) / expect;
  }
  // 4 degrees of freedom: P(chi2 > 25) ~ 5e-5.
  EXPECT_LT(chi2, 25.0) << "hits: " << hits[0] << " " << hits[1] << " " << hits[2] << " " << hits[3] << " " << hits[5];
  EXPECT_NEAR(s.probability(5), 0.5, 1e-12);
  EXPECT_THROW(AliasSampler(std::vector<double>{0, 0}), Error);
}

TEST(Random, StreamsAreStableAcrossBuilds) {
  // Fixed values: a change here changes every dataset split and batch ever produced.
  Xoshiro256 rng(mixSeed({42, 0, 7}));
  const uint64_t a = rng.next();
  Xoshiro256 again(mixSeed({42, 0, 7}));
  EXPECT_EQ(again.next(), a);
  EXPECT_NE(mixSeed({42, 0, 7}), mixSeed({42, 7, 0}));
  for (int i = 0; i < 1000; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_LT(rng.below(7), 7u);
  }
}

struct Fixture {
  std::shared_ptr<const Corpus> corpus;
  std::shared_ptr<const CorpusSplit> split;
};

// Lines of distinct items "l<line>_<pos>" plus a shared frequent item "hot" at every third position.
Fixture makeFixture(int lines, int width, double eval_fraction = 0.0, bool hot = false) {
  std::vector<std::vector<std::string>> text;
  for (int l = 0; l < lines; ++l) {
    std::vector<std::string> line;
    const int len = 2 + (l * 37) % width;
    for (int i = 0; i < len; ++i) {
      line.push_back(hot && i % 3 == 0 ? "hot" : "l" + std::to_string(l) + "_" + std::to_string(i));
    }
    text.push_back(line);
  }
  Fixture f;
  f.corpus = Corpus::fromLines(text);
  SplitOptions o;
  o.eval_fraction = eval_fraction;
  f.split = std::make_shared<CorpusSplit>(*f.corpus, o);
  return f;
}

PairOptions pairOpts(ContextMode mode, int window, double subsample = 0.0) {
  PairOptions o;
  o.mode = mode;
  o.window = window;
  o.subsample = subsample;
  o.seed = 5;
  return o;
}

TEST(Pairs, CountMatchesGeneration) {
  Fixture f = makeFixture(200, 40, 0.0, /*hot=*/true);
  for (auto mode : {ContextMode::kWindow, ContextMode::kBasket}) {
    PairGenerator gen(f.corpus, f.split, pairOpts(mode, 3, 0.01));
    std::vector<Pair> out;
    std::vector<int32_t> scratch;
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      for (int64_t l = 0; l < f.corpus->numLines(); ++l) {
        out.clear();
        gen.linePairs(l, epoch, out, scratch);
        ASSERT_EQ(static_cast<int64_t>(out.size()), gen.countPairs(l, epoch)) << "line " << l;
      }
    }
  }
}

TEST(Pairs, WindowContextsAreNearTheCenter) {
  Fixture f = makeFixture(50, 30);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 4));
  std::vector<Pair> out;
  std::vector<int32_t> scratch;
  const Vocabulary& v = f.corpus->vocab();
  auto pos = [&](int32_t id) { return std::stoi(std::string(v.token(id).substr(v.token(id).find('_') + 1))); };
  for (int64_t l = 0; l < f.corpus->numLines(); ++l) {
    out.clear();
    gen.linePairs(l, 0, out, scratch);
    std::map<int32_t, int> per_center;
    for (const Pair& p : out) {
      const int d = std::abs(pos(p.center) - pos(p.context));
      ASSERT_GE(d, 1);
      ASSERT_LE(d, 4);
      ++per_center[p.center];
    }
    for (auto& [c, n] : per_center) ASSERT_LE(n, 8);
    // Every item is a center (no subsampling) with at least one context.
    EXPECT_EQ(static_cast<int64_t>(per_center.size()), f.corpus->line(l).size);
  }
}

// Pairs of line 0 of a one-line corpus, as token pairs.
std::vector<std::pair<std::string, std::string>> tokenPairs(const std::vector<std::string>& line, int window,
                                                            Direction direction) {
  Fixture f;
  f.corpus = Corpus::fromLines({line});
  SplitOptions so;
  so.eval_fraction = 0.0;
  f.split = std::make_shared<CorpusSplit>(*f.corpus, so);
  PairOptions o = pairOpts(ContextMode::kWindow, window);
  o.direction = direction;
  PairGenerator gen(f.corpus, f.split, o);
  std::vector<Pair> out;
  std::vector<int32_t> scratch;
  gen.linePairs(0, 0, out, scratch);
  EXPECT_EQ(static_cast<int64_t>(out.size()), gen.countPairs(0, 0));
  const Vocabulary& v = f.corpus->vocab();
  std::vector<std::pair<std::string, std::string>> named;
  for (const Pair& p : out) named.emplace_back(std::string(v.token(p.center)), std::string(v.token(p.context)));
  return named;
}

TEST(Pairs, ForwardDirectionPairsEachCenterWithTheItemsAfterIt) {
  using P = std::vector<std::pair<std::string, std::string>>;
  // Window 1 draws b = 1 for every center, so the pairs are exact.
  const std::vector<std::string> line = {"a", "b", "c", "d"};
  EXPECT_EQ(tokenPairs(line, 1, Direction::kForward), (P{{"a", "b"}, {"b", "c"}, {"c", "d"}}));
  EXPECT_EQ(tokenPairs(line, 1, Direction::kBoth),
            (P{{"a", "b"}, {"b", "a"}, {"b", "c"}, {"c", "b"}, {"c", "d"}, {"d", "c"}}));
  // Wider windows draw the same half-widths either way: forward is `both` without the earlier items.
  const std::vector<std::string> longer = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"};
  for (int window : {2, 3, 5, 20}) {
    const P both = tokenPairs(longer, window, Direction::kBoth);
    P later;
    for (const auto& p : both) {
      if (p.second > p.first) later.push_back(p);  // single letters in sequence order
    }
    EXPECT_EQ(tokenPairs(longer, window, Direction::kForward), later) << "window " << window;
    EXPECT_GT(both.size(), later.size());
  }
  // Window 20 over 12 items may reach the end: every forward context is after its center, and the
  // last item is never a center.
  for (const auto& p : tokenPairs(longer, 20, Direction::kForward)) {
    EXPECT_LT(p.first, p.second);
    EXPECT_NE(p.first, "l");
  }
}

TEST(Pairs, ForwardDirectionNeedsWindowContext) {
  Fixture f = makeFixture(5, 10);
  PairOptions o = pairOpts(ContextMode::kBasket, 3);
  o.direction = Direction::kForward;
  EXPECT_THROW(PairGenerator(f.corpus, f.split, o), ConfigError);
  config::JobConfig job;
  EXPECT_EQ(PairOptions::from(job).direction, Direction::kBoth);
  job.data.direction = "forward";
  EXPECT_EQ(PairOptions::from(job).direction, Direction::kForward);
}

TEST(Pairs, BasketContextsAreCappedAndDistinct) {
  std::vector<std::string> basket;
  for (int i = 0; i < 100; ++i) basket.push_back("i" + std::to_string(i));
  Fixture f;
  f.corpus = Corpus::fromLines({basket, {"a", "b", "c"}});
  f.split = std::make_shared<CorpusSplit>(*f.corpus, SplitOptions{0.0, 1, EvalProtocol::kBasket, 1});
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kBasket, 5));
  std::vector<Pair> out;
  std::vector<int32_t> scratch;
  gen.linePairs(0, 0, out, scratch);
  ASSERT_EQ(out.size(), 100u * 10u);
  std::map<int32_t, std::set<int32_t>> ctx;
  for (const Pair& p : out) {
    ASSERT_NE(p.center, p.context);
    ASSERT_TRUE(ctx[p.center].insert(p.context).second) << "repeated context";
  }
  EXPECT_EQ(ctx.size(), 100u);
  out.clear();
  gen.linePairs(1, 0, out, scratch);  // small basket: every other item
  EXPECT_EQ(out.size(), 6u);
}

// Two order lines of one product are one item of the basket: it is never its own context, it counts once
// among the others, and the cursor and countPairs agree with linePairs. Sessions keep their repeats.
TEST(Pairs, ABasketListingAnItemTwiceNeverPairsItWithItself) {
  Fixture f;
  f.corpus = Corpus::fromLines({{"a", "b", "a", "c", "b", "a"}, {"x", "x"}, {"p", "q", "p"}});
  f.split = std::make_shared<CorpusSplit>(*f.corpus, SplitOptions{0.0, 1, EvalProtocol::kBasket, 1});
  for (double subsample : {0.0, 0.01}) {  // 0.01 keeps a, b and c by chance (a's probability ~0.23)
    PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kBasket, 5, subsample));
    std::vector<Pair> out;
    std::vector<int32_t> scratch;
    gen.linePairs(0, 0, out, scratch);
    std::set<std::pair<int32_t, int32_t>> distinct;
    for (const Pair& p : out) {
      EXPECT_NE(p.center, p.context) << "subsample " << subsample;
      distinct.insert({p.center, p.context});
    }
    EXPECT_EQ(distinct.size(), out.size()) << "a pair repeated within one basket";
    if (subsample == 0.0) EXPECT_EQ(out.size(), 6u);  // a, b, c: each with the other two
    EXPECT_EQ(gen.countPairs(0, 0), static_cast<int64_t>(out.size()));
    LineCursor cursor;
    cursor.start(gen, 0, 0);
    std::vector<Pair> taken;
    cursor.take(static_cast<int64_t>(out.size()), taken);
    ASSERT_EQ(taken.size(), out.size());
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(taken[i].center, out[i].center);
      EXPECT_EQ(taken[i].context, out[i].context);
    }
    out.clear();
    gen.linePairs(1, 0, out, scratch);  // one item twice: no pair at all
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(gen.countPairs(1, 0), 0);
  }
  // The counts behind subsampling, negatives and "never trained" read baskets as sets too: x, only ever
  // listed twice in one basket, has no pairs and counts as unseen; a, listed three times, counts once.
  const std::vector<int64_t> baskets = trainCounts(*f.corpus, *f.split, LineCounting::kBasketsAsSets);
  const std::vector<int64_t> listings = trainCounts(*f.corpus, *f.split);
  const auto id = [&](const char* name) { return static_cast<size_t>(f.corpus->vocab().id(name)); };
  EXPECT_EQ(baskets[id("a")], 1);
  EXPECT_EQ(baskets[id("p")], 1);
  EXPECT_EQ(baskets[id("x")], 0);
  EXPECT_EQ(listings[id("a")], 3);
  EXPECT_EQ(listings[id("x")], 2);
  PairGenerator sessions(f.corpus, f.split, pairOpts(ContextMode::kWindow, 5, 0.0));
  std::vector<Pair> out;
  std::vector<int32_t> scratch;
  sessions.linePairs(1, 0, out, scratch);
  EXPECT_EQ(out.size(), 2u);  // x then x: a session may come back to an item
}

// Baskets that each list one item again give no pairs at all: said as such, not as an empty corpus.
TEST(Pairs, BasketsOfOneItemListedAgainAreNoTrainingData) {
  Fixture f;
  f.corpus = Corpus::fromLines({{"x", "x"}, {"y", "y", "y"}});
  f.split = std::make_shared<CorpusSplit>(*f.corpus, SplitOptions{0.0, 1, EvalProtocol::kBasket, 1});
  try {
    PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kBasket, 5));
    ADD_FAILURE() << "a corpus without a basket of two different items was taken";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("no training basket holds two different items"));
  }
  EXPECT_NO_THROW(PairGenerator(f.corpus, f.split, pairOpts(ContextMode::kWindow, 5)));  // sessions: x then x
}

TEST(Pairs, SubsamplingThinsFrequentItems) {
  Fixture f = makeFixture(300, 30, 0.0, /*hot=*/true);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 2, 1e-3));
  const int32_t hot = f.corpus->vocab().id("hot");
  ASSERT_EQ(hot, 0);
  EXPECT_LT(gen.keepProbability(hot), 0.5);
  EXPECT_EQ(gen.keepProbability(f.corpus->vocab().size() - 1), 1.0);
  std::vector<Pair> out;
  std::vector<int32_t> scratch;
  int64_t hot_centers = 0, total = 0;
  for (int64_t l = 0; l < f.corpus->numLines(); ++l) gen.linePairs(l, 0, out, scratch);
  for (const Pair& p : out) hot_centers += p.center == hot, ++total;
  const double share = static_cast<double>(hot_centers) / total;
  EXPECT_LT(share, 0.2);  // ~1/3 of the positions without subsampling
}

TEST(Pairs, NegativesFollowTrainCountsToTheNsExponent) {
  // Half the lines are held out, so their last item is hidden and (being "l<line>_<pos>", unique) has a
  // training count of 0: it must never be a negative, whatever the exponent (pow(0, 0) is 1).
  Fixture f = makeFixture(40, 30, 0.5, /*hot=*/true);
  const std::vector<int64_t> counts = trainCounts(*f.corpus, *f.split);
  const int32_t hot = f.corpus->vocab().id("hot");
  const auto once = std::find(counts.begin(), counts.end(), 1) - counts.begin();
  const auto unseen = std::find(counts.begin(), counts.end(), 0) - counts.begin();
  ASSERT_GT(counts[hot], 1);
  ASSERT_LT(once, static_cast<int64_t>(counts.size()));
  ASSERT_LT(unseen, static_cast<int64_t>(counts.size()));
  for (double e : {0.75, 0.0, 1.0, -0.5}) {
    PairOptions o = pairOpts(ContextMode::kWindow, 2);
    o.ns_exponent = e;
    PairGenerator gen(f.corpus, f.split, o);
    const AliasSampler& s = gen.negativeSampler();
    EXPECT_NEAR(s.probability(hot) / s.probability(once), std::pow(static_cast<double>(counts[hot]), e), 1e-9)
        << "ns_exponent " << e;
    EXPECT_EQ(s.probability(unseen), 0.0) << "ns_exponent " << e;
  }
}

TEST(Pairs, DeterministicPerEpochAndLine) {
  Fixture f = makeFixture(20, 20, 0.0, true);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 3, 0.05));
  std::vector<Pair> a, b, c;
  std::vector<int32_t> s;
  gen.linePairs(7, 1, a, s);
  gen.linePairs(7, 1, b, s);
  gen.linePairs(7, 2, c, s);
  auto same = [](const std::vector<Pair>& x, const std::vector<Pair>& y) {
    return x.size() == y.size() && std::equal(x.begin(), x.end(), y.begin(), [](const Pair& p, const Pair& q) {
             return p.center == q.center && p.context == q.context;
           });
  };
  EXPECT_TRUE(same(a, b));
  EXPECT_FALSE(same(a, c));
}

TEST(Sharding, ShardsFormADisjointCoverWithEqualSteps) {
  Fixture f = makeFixture(501, 25, 0.2);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 3, 1e-2));
  for (int world = 1; world <= 4; ++world) {
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      std::vector<int64_t> all;
      std::vector<int64_t> steps;
      std::vector<int64_t> first_lines;
      for (int r = 0; r < world; ++r) {
        const EpochShard s = makeEpochShard(gen, epoch, r, world);
        all.insert(all.end(), s.lines.begin(), s.lines.end());
        EXPECT_EQ(s.pairs(), s.rank_pairs[r]);
        steps.push_back(stepsPerEpoch(s, 64));
        first_lines.push_back(s.lines.front());
      }
      std::sort(all.begin(), all.end());
      EXPECT_EQ(all, f.split->trainLines()) << "world " << world << " epoch " << epoch;
      for (int64_t s : steps) EXPECT_EQ(s, steps[0]);
    }
  }
  // Reshuffled between epochs.
  EXPECT_NE(makeEpochShard(gen, 0, 0, 2).lines, makeEpochShard(gen, 1, 0, 2).lines);
}

// A loader that holds its neighbours' rows builds their shards in one pass: each the same as built alone.
TEST(Sharding, SeveralRanksShardsInOnePassAreEachRanksOwn) {
  Fixture f = makeFixture(501, 25, 0.2);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 3, 1e-2));
  const std::vector<EpochShard> some = makeEpochShards(gen, 1, 1, 3, 5);
  ASSERT_EQ(some.size(), 3u);
  for (int r = 1; r <= 3; ++r) {
    const EpochShard alone = makeEpochShard(gen, 1, r, 5);
    const EpochShard& together = some[static_cast<size_t>(r - 1)];
    EXPECT_EQ(together.epoch, 1);
    EXPECT_EQ(together.lines, alone.lines) << "rank " << r;
    EXPECT_EQ(together.pair_end, alone.pair_end) << "rank " << r;
    EXPECT_EQ(together.rank_pairs, alone.rank_pairs) << "rank " << r;
  }
  EXPECT_NE(some[0].lines, some[1].lines);
  EXPECT_THROW(makeEpochShards(gen, 0, 2, 1, 5), Error);
  EXPECT_THROW(makeEpochShards(gen, 0, 3, 5, 5), Error);
}

// Reads pairs [first, first + count) of `shard` through `cursor` and through a LineCursor of its own, and
// says where the two differ: what a cursor goes on from must read as what is generated afresh.
::testing::AssertionResult readsAsFresh(const PairGenerator& gen, const EpochShard& shard, int64_t first,
                                        int64_t count, LineCursor& cursor) {
  std::vector<Pair> got, fresh;
  streamPairs(gen, shard, first, count, got, cursor);
  LineCursor none;
  streamPairs(gen, shard, first, count, fresh, none);
  if (got.size() != fresh.size()) return ::testing::AssertionFailure() << got.size() << " pairs, not " << fresh.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].center != fresh[i].center || got[i].context != fresh[i].context) {
      return ::testing::AssertionFailure() << "epoch " << shard.epoch << ", pair " << first << "+" << i << " is ("
                                           << got[i].center << ", " << got[i].context << "), not ("
                                           << fresh[i].center << ", " << fresh[i].context << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// A stream goes on from where its cursor is (LineCursor): the batches a long line spans do not generate it
// again. The cursor belongs to its generator: another one (here another window, so other pairs for the same
// line and epoch numbers) starts the line afresh.
TEST(Sharding, TheCursorKeptBetweenCallsIsTheGeneratorsOwn) {
  Fixture f = makeFixture(30, 10);
  // Subsampling draws other kept items each epoch: a line's pairs differ from epoch to epoch.
  const PairGenerator a(f.corpus, f.split, pairOpts(ContextMode::kWindow, 2, 1e-3));
  const PairGenerator b(f.corpus, f.split, pairOpts(ContextMode::kWindow, 3));
  ASSERT_NE(a.id(), b.id());
  const EpochShard sa = makeEpochShard(a, 0, 0, 1), sb = makeEpochShard(b, 0, 0, 1);
  const EpochShard e1 = makeEpochShard(a, 1, 0, 1);
  LineCursor cursor;
  // One generator read in small pieces, across line boundaries, then the next epoch's shard (same line
  // numbers, other pairs) with the same cursor.
  for (const EpochShard* shard : {&sa, &e1}) {
    for (int64_t first = 0; first < shard->pairs(); first += 3) {
      ASSERT_TRUE(readsAsFresh(a, *shard, first, 3, cursor));
    }
  }
  // The same line read in epoch 0, then in epoch 1 (subsampling kept other items): not where the cursor is.
  const auto at = std::find(sa.lines.begin(), sa.lines.end(), e1.lines.front()) - sa.lines.begin();
  ASSERT_LT(static_cast<size_t>(at), sa.lines.size());
  const int64_t start0 = at == 0 ? 0 : sa.pair_end[static_cast<size_t>(at) - 1];
  ASSERT_TRUE(readsAsFresh(a, sa, start0, 1, cursor));
  ASSERT_TRUE(cursor.reads(a, e1.lines.front(), 0));
  ASSERT_TRUE(readsAsFresh(a, e1, 0, e1.pair_end.front(), cursor)) << "the cursor kept across epochs";
  // Two generators in turn: each read finds the other's cursor.
  for (int64_t first = 0; first < 30; first += 3) {
    ASSERT_TRUE(readsAsFresh(a, sa, first, 3, cursor));
    ASSERT_TRUE(readsAsFresh(b, sb, first, 3, cursor));
  }
}

// Every way through one long line (forward in pieces, jumps ahead that pass whole centers over, going
// back) reads the pairs linePairs() writes at those places, in each context mode.
TEST(Sharding, ACursorReadsALongLineInAnyOrderAsLinePairsWritesIt) {
  std::vector<std::string> line;
  for (int i = 0; i < 3000; ++i) line.push_back("i" + std::to_string(i % 700));  // each item 4-5 times
  Fixture f;
  f.corpus = Corpus::fromLines({line, {"a", "b"}});
  f.split = std::make_shared<CorpusSplit>(*f.corpus, SplitOptions{});
  for (const auto& [mode, forward] : {std::pair{ContextMode::kWindow, false}, std::pair{ContextMode::kWindow, true},
                                      std::pair{ContextMode::kBasket, false}}) {
    PairOptions o = pairOpts(mode, 4, 1e-4);  // keeps about a third of the items
    if (forward) o.direction = Direction::kForward;
    const PairGenerator gen(f.corpus, f.split, o);
    std::vector<Pair> all;
    std::vector<int32_t> scratch;
    gen.linePairs(0, 0, all, scratch);
    const auto total = static_cast<int64_t>(all.size());
    ASSERT_EQ(total, gen.countPairs(0, 0));
    ASSERT_GT(total, 1000);
    LineCursor cursor;
    Xoshiro256 rng(11);
    int64_t restarts = 0;
    for (int read = 0; read < 200; ++read) {
      // Mostly onwards from where it is (small steps and jumps over many centers), sometimes back.
      const int64_t here = cursor.reads(gen, 0, 0) ? cursor.position() : 0;
      int64_t first = read % 7 == 6 ? static_cast<int64_t>(rng.below(static_cast<uint64_t>(total)))
                                    : here + static_cast<int64_t>(rng.below(read % 3 == 0 ? 400 : 5));
      first = std::min(first, total - 1);
      const int64_t count = std::min<int64_t>(1 + static_cast<int64_t>(rng.below(40)), total - first);
      if (!cursor.reads(gen, 0, 0) || cursor.position() > first) {
        cursor.start(gen, 0, 0);
        ++restarts;
      }
      cursor.skip(first - cursor.position());
      std::vector<Pair> got;
      cursor.take(count, got);
      ASSERT_EQ(cursor.position(), first + count);
      for (int64_t i = 0; i < count; ++i) {
        const Pair& want = all[static_cast<size_t>(first + i)];
        ASSERT_EQ(got[i].center, want.center) << "mode " << static_cast<int>(mode) << ", pair " << first + i;
        ASSERT_EQ(got[i].context, want.context) << "mode " << static_cast<int>(mode) << ", pair " << first + i;
      }
    }
    EXPECT_GT(restarts, 10);  // the reads that went back were read too
    // Past the line's end is an error, not a read of whatever memory follows.
    cursor.start(gen, 0, 0);
    cursor.skip(total - 1);
    std::vector<Pair> last;
    EXPECT_THROW(cursor.take(2, last), Error);
  }
}

TEST(Sharding, StreamWrapsAndMatchesLinePairs) {
  Fixture f = makeFixture(30, 10);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 2));
  const EpochShard s = makeEpochShard(gen, 0, 0, 1);
  std::vector<Pair> all, got;
  std::vector<int32_t> scratch;
  LineCursor cursor;
  for (int64_t l : s.lines) gen.linePairs(l, 0, all, scratch);
  ASSERT_EQ(static_cast<int64_t>(all.size()), s.pairs());
  const int64_t total = s.pairs();
  for (int64_t first : {int64_t{0}, int64_t{3}, total - 5, total + 7}) {
    streamPairs(gen, s, first, 40, got, cursor);
    ASSERT_EQ(got.size(), 40u);
    for (int64_t i = 0; i < 40; ++i) {
      const Pair& want = all[static_cast<size_t>((first + i) % total)];
      ASSERT_EQ(got[i].center, want.center) << first << "+" << i;
      ASSERT_EQ(got[i].context, want.context);
    }
  }
}

TEST(Sharding, TooManyRanksForTheCorpusIsADataError) {
  Fixture f = makeFixture(2, 5);
  PairGenerator gen(f.corpus, f.split, pairOpts(ContextMode::kWindow, 2));
  EXPECT_THROW(stepsPerEpoch(makeEpochShard(gen, 0, 0, 4), 8), DataError);
}

// A batch larger than a rank's pairs is refused, naming the largest that fits: it used to make one step
// an epoch, each pair repeated within it.
TEST(Sharding, ABatchLargerThanARanksPairsIsRefused) {
  EpochShard s;
  s.rank_pairs = {100, 50};
  EXPECT_EQ(stepsPerEpoch(s, 50), 1);
  EXPECT_EQ(stepsPerEpoch(s, 16), 3);
  EXPECT_THAT([&] { stepsPerEpoch(s, 64); },
              ::testing::ThrowsMessage<DataError>(::testing::HasSubstr(
                  "rank 1 of 2 gets 50 training pairs per epoch, fewer than one batch (data.batch_size 64): use "
                  "data.batch_size 50 or less")));
}

}  // namespace
}  // namespace ringtrain::data
