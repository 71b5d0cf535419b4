#include "ringtrain/train/evaluation.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "ringtrain/train/trainer.h"

namespace ringtrain::train {
namespace {

// Unit vectors at known angles from item 0: cos = 1, 0.9, 0.5, 0, -1 (items 0..4); item 5 = item 0 x 3.
at::Tensor handMade() {
  std::vector<float> v;
  for (double c : {1.0, 0.9, 0.5, 0.0, -1.0}) {
    v.push_back(static_cast<float>(c));
    v.push_back(static_cast<float>(std::sqrt(std::max(0.0, 1 - c * c))));
  }
  v.push_back(3.0f);
  v.push_back(0.0f);
  return at::tensor(v).view({6, 2});
}

TEST(Evaluation, HitRateAndNdcgOnKnownRanks) {
  const at::Tensor v = handMade();
  // Query {0}: scores (excluding 0) 1:0.9 2:0.5 3:0 4:-1 5:1 (cosine ignores the length).
  const std::vector<EvalQuery> queries = {{{0}, 5}, {{0}, 1}, {{0}, 2}, {{0}, 4}, {{0, 5}, 2}};
  // ranks: 0, 1, 2, 4, and with 5 also in the query: 1 (only item 1 above).
  const RankingSums k1 = evaluateRanking(v, queries, 1);
  EXPECT_EQ(k1.count, 5);
  EXPECT_DOUBLE_EQ(k1.hits, 1);
  const RankingSums k3 = evaluateRanking(v, queries, 3);
  EXPECT_DOUBLE_EQ(k3.hits, 4);
  EXPECT_NEAR(k3.ndcg_sum, 1.0 + 1 / std::log2(3.0) + 1 / std::log2(4.0) + 1 / std::log2(3.0), 1e-9);
  EXPECT_NEAR(k3.hitRate(), 0.8, 1e-12);
  // max_queries keeps the first ones.
  EXPECT_EQ(evaluateRanking(v, queries, 3, 0, 1, 2).count, 2);
}

// The 0-based rank of a single query's target, found as the smallest k that makes it a hit.
int64_t rankOf(const at::Tensor& qv, const at::Tensor& cv, const EvalQuery& query, RankingOptions options) {
  for (int k = 1; k <= qv.size(0); ++k) {
    options.k = k;
    if (evaluateRanking(qv, cv, {query}, options).hits == 1) return k - 1;
  }
  return -1;
}

TEST(Evaluation, InOutScoresRawDotProductsAgainstTheOutputTable) {
  // Query item 0 is (1, 0) on the input side. Output side: item 1 (0.5, 0): cos 1, dot 0.5;
  // item 2 (3, 3): cos 0.707, dot 3; item 3 (0, 1): cos 0, dot 0.
  const at::Tensor in = at::tensor(std::vector<float>{1, 0, 0, 1, 0, 1, 1, 1}).view({4, 2});
  const at::Tensor out = at::tensor(std::vector<float>{0, 0, 0.5f, 0, 3, 3, 0, 1}).view({4, 2});
  RankingOptions cosine;
  RankingOptions in_out;
  in_out.cosine = false;
  EXPECT_EQ(rankOf(in, out, {{0}, 2}, cosine), 1);  // item 1 has the higher cosine
  EXPECT_EQ(rankOf(in, out, {{0}, 1}, cosine), 0);
  EXPECT_EQ(rankOf(in, out, {{0}, 2}, in_out), 0);  // item 2 has the larger dot product
  EXPECT_EQ(rankOf(in, out, {{0}, 1}, in_out), 1);
  // One table for both sides is the cosine overload's behaviour.
  const at::Tensor v = handMade();
  const std::vector<EvalQuery> queries = {{{0}, 5}, {{0}, 1}, {{0}, 2}, {{0}, 4}, {{0, 5}, 2}};
  RankingOptions k3;
  k3.k = 3;
  EXPECT_DOUBLE_EQ(evaluateRanking(v, v, queries, k3).hits, evaluateRanking(v, queries, 3).hits);
  EXPECT_THROW(evaluateRanking(in, out.narrow(0, 0, 3), {{{0}, 1}}, in_out), Error);
}

TEST(Evaluation, RecentItemsScoresTheNewestQueryItemsAndStillExcludesAll) {
  const at::Tensor v = handMade();  // cos to item 0: items 1 0.9, 2 0.5, 3 0, 4 -1, 5 1
  RankingOptions all;
  RankingOptions last1;
  last1.recent_items = 1;
  // Query {3, 0}: with both, item 2 scores cos(2,3) + cos(2,0) = 0.866 + 0.5, above every other candidate;
  // with the newest item (0) alone, items 5 (1.0) and 1 (0.9) beat item 2 (0.5).
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, all), 0);
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, last1), 2);
  // Query {1, 0} scored by item 0 only: item 1 (0.9) is not scored but is still excluded, so only item 5
  // beats item 2.
  EXPECT_EQ(rankOf(v, v, {{1, 0}, 2}, last1), 1);
  // recent_items larger than the query: every item scores.
  RankingOptions last9;
  last9.recent_items = 9;
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, last9), 0);
}

TEST(Evaluation, RecentDecayWeighsTheNewestItemsMost) {
  const at::Tensor v = handMade();
  // Query {3, 0}, item 0 the newest: candidate c scores d * cos(c, 3) + cos(c, 0), so item 2 scores
  // 0.866 d + 0.5, item 1 0.436 d + 0.9 and item 5 1.0.
  auto decayed = [](double d) {
    RankingOptions o;
    o.recent_decay = d;
    return o;
  };
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, decayed(1.0)), 0);  // 1.366 against 1.336 and 1.0
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, decayed(0.9)), 1);  // 1.279: item 1 (1.292) passes it
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, decayed(0.5)), 2);  // 0.933: items 1 (1.118) and 5 (1.0) pass it
  EXPECT_EQ(rankOf(v, v, {{3, 0}, 2}, decayed(0.0)), 2);  // the newest item alone, as recent_items 1
  // With recent_items the decay counts from the newest scored item: query {4, 3, 0} scored by {3, 0} at 0.5
  // ranks item 2 as {3, 0} did (2). Counted from the oldest scored item (3 weighing 1, 0 weighing 0.5),
  // item 2 (1.116) would lead items 1 (0.886) and 5 (0.5): rank 0.
  RankingOptions last2 = decayed(0.5);
  last2.recent_items = 2;
  EXPECT_EQ(rankOf(v, v, {{4, 3, 0}, 2}, last2), 2);
  EXPECT_THROW(rankOf(v, v, {{3, 0}, 2}, decayed(1.5)), Error);
  EXPECT_THROW(rankOf(v, v, {{3, 0}, 2}, decayed(-0.1)), Error);
}

TEST(Evaluation, WorkSplitOverRanksAddsUpToTheWhole) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor v = at::randn({300, 8}, gen);
  std::vector<EvalQuery> queries;
  for (int i = 0; i < 257; ++i) queries.push_back({{i % 300, (i * 7) % 300, (i * 13 + 1) % 300}, (i * 31 + 5) % 300});
  const RankingSums whole = evaluateRanking(v, queries, 10);
  for (int world : {2, 3}) {
    RankingSums sum;
    for (int r = 0; r < world; ++r) sum.add(evaluateRanking(v, queries, 10, r, world));
    EXPECT_EQ(sum.count, whole.count);
    EXPECT_DOUBLE_EQ(sum.hits, whole.hits);
    EXPECT_NEAR(sum.ndcg_sum, whole.ndcg_sum, 1e-9);
  }
}

// A large catalog is scored a few queries at a time (the scores of 256 queries at 1M items took 3.8 GB):
// blocks, the last one partial, count as each query alone does.
TEST(Evaluation, ALargeCatalogScoredInSmallBlocksCountsAsQueriesAlone) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t items = 200000;  // 83 queries a block
  at::Tensor v = at::randn({items, 4}, gen);
  std::vector<EvalQuery> queries;
  for (int i = 0; i < 190; ++i) {
    const auto item = [&](int64_t x) { return static_cast<int32_t>((x * 7919) % items); };
    if (i % 2 == 1) {
      queries.push_back({{item(i), item(i + 500)}, item(3 * i + 1)});
    } else {  // a target next to its query's item: ranked near the top, not anywhere
      queries.push_back({{item(i)}, item(3 * i + 1)});
      v[item(3 * i + 1)].copy_(v[item(i)] + 0.002 * at::randn({4}, gen));
    }
  }
  queries.push_back({{1, 2}, 1});  // the target among the query's items
  for (int k : {10, 100000}) {
    const RankingSums whole = evaluateRanking(v, queries, k);
    RankingSums alone;
    for (const EvalQuery& q : queries) alone.add(evaluateRanking(v, {q}, k));
    EXPECT_EQ(whole.count, alone.count);
    EXPECT_DOUBLE_EQ(whole.hits, alone.hits) << "k " << k;
    EXPECT_NEAR(whole.ndcg_sum, alone.ndcg_sum, 1e-9) << "k " << k;
    EXPECT_GT(whole.hits, 0) << "k " << k << ": a figure of nothing compares nothing";
  }
}

TEST(Evaluation, BadIdsAreADataError) {
  const at::Tensor v = handMade();
  EXPECT_THROW(evaluateRanking(v, {{{0}, 6}}, 10), DataError);
  EXPECT_THROW(evaluateRanking(v, {{{-1}, 1}}, 10), DataError);
  EXPECT_THROW(evaluatePopularity({1, 2}, {{{0}, 2}}, 10), DataError);
}

TEST(Evaluation, PopularityRanksByCountExcludingTheQuery) {
  const std::vector<int64_t> counts = {50, 40, 30, 20, 10};
  // target 3 (count 20): items 0, 1, 2 above; query {0} removes one -> rank 2.
  const RankingSums s = evaluatePopularity(counts, {{{0}, 3}, {{4}, 0}, {{1, 2}, 4}}, 3);
  // ranks: 2 (hit), 0 (hit), 4 - 2 = 2 (hit)
  EXPECT_EQ(s.count, 3);
  EXPECT_DOUBLE_EQ(s.hits, 3);
  EXPECT_NEAR(s.ndcg_sum, 1 / std::log2(4.0) + 1.0 + 1 / std::log2(4.0), 1e-12);
  EXPECT_DOUBLE_EQ(evaluatePopularity(counts, {{{0}, 3}}, 2).hits, 0);
}

// Ties with the target share their places: a collapsed model (every vector alike) gets chance, not HR 1.
TEST(Evaluation, TiesWithTheTargetCountAsARandomOrderAmongThem) {
  const at::Tensor same = at::ones({10, 4});
  // 9 candidates besides the query item 0, all level with the target: each place 0..8 has weight 1/9.
  const RankingSums s = evaluateRanking(same, {{{0}, 5}}, 3);
  EXPECT_EQ(s.count, 1);
  EXPECT_NEAR(s.hits, 3.0 / 9.0, 1e-12);
  EXPECT_NEAR(s.ndcg_sum, (1.0 + 1 / std::log2(3.0) + 1 / std::log2(4.0)) / 9.0, 1e-12);
  // Counts: target 3 (count 20) level with item 4; item 0 is higher; the query {1} is excluded.
  const std::vector<int64_t> counts = {50, 5, 5, 20, 20};
  const RankingSums p = evaluatePopularity(counts, {{{1}, 3}}, 2);
  EXPECT_NEAR(p.hits, 0.5, 1e-12);  // places 1 and 2, one of them inside the top 2
  EXPECT_NEAR(p.ndcg_sum, 0.5 / std::log2(3.0), 1e-12);
}

// Items training never saw keep zero output vectors: scored 0, they would stand above every candidate the
// model scores below 0. With train_counts they rank after all seen candidates.
TEST(Evaluation, ItemsTrainingNeverSawRankBelowEverySeenOne) {
  // Query item 0 is (1, 0). Output side: items 1 and 2 untrained (0, 0); items 3, 4, 5 score -1, -2, -3
  // against item 0 (item 4's second coordinate only matters to queries with a second component).
  const at::Tensor in = at::tensor(std::vector<float>{1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}).view({6, 2});
  const at::Tensor out = at::tensor(std::vector<float>{1, 1, 0, 0, 0, 0, -1, 0, -2, 3, -3, 0}).view({6, 2});
  const std::vector<int64_t> counts = {9, 0, 0, 4, 3, 2};
  RankingOptions plain;
  plain.cosine = false;
  RankingOptions seen_first = plain;
  seen_first.train_counts = &counts;
  EXPECT_EQ(rankOf(in, out, {{0}, 3}, plain), 2);       // behind the two untrained items at 0
  EXPECT_EQ(rankOf(in, out, {{0}, 3}, seen_first), 0);
  EXPECT_EQ(rankOf(in, out, {{0}, 5}, seen_first), 2);
  // An untrained target: behind the 3 seen candidates, level with the other untrained one (places 3 and
  // 4, half each); with that one in the query, place 3 alone.
  seen_first.k = 4;
  EXPECT_NEAR(evaluateRanking(in, out, {{{0}, 1}}, seen_first, 0, 1).hits, 0.5, 1e-12);
  EXPECT_NEAR(evaluateRanking(in, out, {{{0, 2}, 1}}, seen_first, 0, 1).hits, 1.0, 1e-12);
  seen_first.k = 3;
  EXPECT_EQ(evaluateRanking(in, out, {{{0, 2}, 1}}, seen_first, 0, 1).hits, 0);
  // A seen query item does not lift an untrained target: {0, 3} leaves 2 seen candidates above it.
  EXPECT_NEAR(evaluateRanking(in, out, {{{0, 3}, 1}}, seen_first, 0, 1).hits, 0.5, 1e-12);  // places 2, 3
  // An untrained query item adds nothing to the query: {0, 1} ranks as {0} (with item 1's (0, 1) in the sum,
  // item 4 would score 1 and pass target 3). A seen target in its own query stays a candidate.
  seen_first.k = 10;
  EXPECT_EQ(rankOf(in, out, {{0, 1}, 3}, seen_first), 0);
  EXPECT_EQ(rankOf(in, out, {{0, 1}, 3}, plain), 2);  // item 2 (0) and item 4 (1) above it
  EXPECT_EQ(rankOf(in, out, {{0, 3}, 3}, seen_first), 1);  // query (1, 1): item 4 scores 1, the target -1
  // Under cosine too: untrained candidates (cosine 0) no longer stand above the target (item 4, -0.55).
  RankingOptions cosine;
  EXPECT_EQ(rankOf(in, out, {{0}, 4}, cosine), 2);
  cosine.train_counts = &counts;
  EXPECT_EQ(rankOf(in, out, {{0}, 4}, cosine), 0);
  const std::vector<int64_t> short_counts = {1, 1};
  seen_first.train_counts = &short_counts;
  EXPECT_THROW(evaluateRanking(in, out, {{{0}, 3}}, seen_first, 0, 1), Error);
}

// What the figures must not be read without: no query at all, and k that no target can miss.
TEST(Evaluation, RankingCaveatNamesWhyFiguresSayNothing) {
  EXPECT_EQ(rankingCaveat(RankingSums{0, 0, 0}, 0, 100, 10), "no line is held out: see data.eval_fraction");
  EXPECT_THAT(rankingCaveat(RankingSums{0, 0, 0}, 1, 100, 10),
              ::testing::HasSubstr("none of the 1 held-out line gives a query"));
  EXPECT_THAT(rankingCaveat(RankingSums{0, 0, 0}, 12, 100, 10),
              ::testing::HasSubstr("none of the 12 held-out lines gives a query"));
  EXPECT_EQ(rankingCaveat(RankingSums{3, 1, 5}, 12, 100, 98), "");
  EXPECT_EQ(rankingCaveat(RankingSums{5, 1, 5}, 12, 100, 99),
            "k = 99 is at least the 99 candidates of a query (100 items less its own): every target is a hit");
}

TEST(Evaluation, CategoryAgreementOnPlantedClusters) {
  // 4 clusters of 30 items around orthogonal centres; 10 items of unknown category.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t per = 30, clusters = 4;
  at::Tensor v = at::randn({per * clusters + 10, 16}, gen) * 0.05;
  std::vector<int32_t> category(static_cast<size_t>(per * clusters + 10), -1);
  for (int64_t c = 0; c < clusters; ++c) {
    for (int64_t i = 0; i < per; ++i) {
      v[c * per + i][c] += 1.0;
      category[static_cast<size_t>(c * per + i)] = static_cast<int32_t>(c);
    }
  }
  const CategorySums s = categoryAgreement(v, category, 60, 10, 7);
  EXPECT_EQ(s.neighbor_total, 600);
  EXPECT_DOUBLE_EQ(s.neighborShare(), 1.0);
  EXPECT_NEAR(s.randomShare(), 29.0 / 119.0, 0.08);
  CategorySums split;
  for (int r = 0; r < 3; ++r) split.add(categoryAgreement(v, category, 60, 10, 7, r, 3));
  EXPECT_EQ(split.neighbor_same, s.neighbor_same);
  EXPECT_EQ(split.random_same, s.random_same);
  EXPECT_EQ(split.random_total, s.random_total);
  // Random vectors: neighbours are no better than random pairs.
  const CategorySums noise = categoryAgreement(at::randn({120, 16}, gen), std::vector<int32_t>(category.begin(), category.begin() + 120), 120, 10, 7);
  EXPECT_LT(noise.neighborShare(), 0.5);
}

}  // namespace
}  // namespace ringtrain::train
