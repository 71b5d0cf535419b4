// Evaluation of item embeddings: next-item / hidden-item retrieval (HR@k, NDCG@k), a popularity baseline,
// and neighbour-category agreement. Each function does this rank's share of the work (queries or sampled
// items with index % world_size == rank) and returns partial sums; the trainer adds them across ranks
// (allreduce of the fields) and derives the means.
//
// Ranking protocol: a query is a set of items (the rest of a basket, or the items before the target in a
// session) and one target. Score of candidate c = <sum over scored query items q of qvec[q], cvec[c]>; the
// query's own items are excluded from the ranking; rank = number of candidates scoring strictly higher
// than the target. Hit if rank < k; NDCG adds 1 / log2(rank + 2) when a hit. Candidates scoring the same as
// the target share the places after those: each place counts with weight 1 / (ties + 1), the average over a
// random order among them (so a model that scores everything alike gets chance, not HR 1). A NaN target
// score is a miss. The popularity baseline treats equal counts the same way. Scoring is batched: queries in blocks, one matmul against all candidates.
// RankingOptions::recent_items > 0 scores with only the last N items of each query (for sessions: the
// newest items of the visible prefix, which predict what comes next far better than the whole history);
// all query items are still excluded from the ranking, so the candidate set does not change.
// RankingOptions::recent_decay < 1 weights the scored items by recency: the newest 1, the one before it
// recent_decay, then recent_decay^2, and so on (for sessions, where the last items say the most). Order is
// the query's: for sessions the split keeps each item at its first occurrence; baskets have no order.
//
// RankingOptions::train_counts ranks the items training never saw below all others, as popularity and
// counted baselines do, and leaves them out of the query's sum: their vectors are their initial ones, which
// say nothing (under in_out, zero output vectors would all score 0, above every candidate the model has
// learnt to score below 0; under cosine, random input vectors rank at random). A target training never saw
// is then level with the other unseen candidates, after all the seen ones.
//
// Which vectors (RankingOptions::cosine and the two tables passed in): an SGNS model trains
// <tower(in[a]), out[b]> for co-occurring a, b.
//   cosine - qvec = cvec = the input-side vectors (tower(in) when a tower exists, else in), L2-normalised:
//            sum of cos(in[q], in[c]), "first-order" similarity through shared contexts, as word2vec
//            exports them (itemVectors()). Popularity is divided away.
//   in_out - qvec = tower(in), cvec = out, raw dot products: the score SGNS itself trains, whose size
//            follows how often c occurs near q (shifted PMI against the negative distribution), so frequent
//            items keep their advantage. On MovieLens leave-last-10 this is what beats popularity.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ringtrain::model {
class SgnsModel;
}

namespace ringtrain::train {

// One held-out query. Item ids are vocabulary indices.
struct EvalQuery {
  std::vector<int32_t> query;
  int32_t target = 0;
};

struct RankingSums {
  double hits = 0;
  double ndcg_sum = 0;
  int64_t count = 0;
  void add(const RankingSums& other) {
    hits += other.hits;
    ndcg_sum += other.ndcg_sum;
    count += other.count;
  }
  double hitRate() const { return count ? hits / count : 0.0; }
  double ndcg() const { return count ? ndcg_sum / count : 0.0; }
};

// The [V, D] float32 vectors used for evaluation and export (see the note above), on the model's device.
at::Tensor itemVectors(const model::SgnsModel& model);

struct RankingOptions {
  int k = 10;
  int64_t max_queries = 0;   // > 0: use only the first max_queries queries
  int64_t recent_items = 0;  // > 0: score with the last N items of each query only
  double recent_decay = 1.0; // in [0, 1]: the newest scored item weighs 1, the next recent_decay, ... (1: alike)
  bool cosine = true;        // true: L2-normalise both tables first
  // Non-null: training occurrences per item. Candidates with none rank below every trained one (their
  // vectors hold only their initial values, so their scores say nothing; see the note above).
  const std::vector<int64_t>* train_counts = nullptr;
};

// Ranks with `query_vectors` [V, D] for the query items and `candidate_vectors` [V, D] for the candidates,
// both on one device (the work runs there). Queries whose target or items fall outside [0, V) throw
// DataError.
RankingSums evaluateRanking(const at::Tensor& query_vectors, const at::Tensor& candidate_vectors,
                            const std::vector<EvalQuery>& queries, const RankingOptions& options, int rank = 0,
                            int world_size = 1);

// Cosine ranking with one table for queries and candidates; max_queries > 0 uses only the first ones.
RankingSums evaluateRanking(const at::Tensor& vectors, const std::vector<EvalQuery>& queries, int k,
                            int rank = 0, int world_size = 1, int64_t max_queries = 0);

// Baseline: candidates ranked by training count (item_counts[V]), query items excluded, same sums.
RankingSums evaluatePopularity(const std::vector<int64_t>& item_counts, const std::vector<EvalQuery>& queries,
                               int k, int rank = 0, int world_size = 1, int64_t max_queries = 0);

struct CategorySums {
  int64_t neighbor_same = 0;   // of sampled items' k nearest neighbours, how many share the category
  int64_t neighbor_total = 0;
  int64_t random_same = 0;     // of as many random pairs, how many share the category
  int64_t random_total = 0;
  void add(const CategorySums& o) {
    neighbor_same += o.neighbor_same;
    neighbor_total += o.neighbor_total;
    random_same += o.random_same;
    random_total += o.random_total;
  }
  double neighborShare() const { return neighbor_total ? double(neighbor_same) / neighbor_total : 0.0; }
  double randomShare() const { return random_total ? double(random_same) / random_total : 0.0; }
};

// category[i] < 0: unknown (such items are neither sampled nor counted as neighbours). `sample` items with
// a known category are drawn with `seed` (the same on every rank; each rank takes its share), each one's
// k nearest neighbours by cosine among items with a known category (itself excluded) are checked.
CategorySums categoryAgreement(const at::Tensor& vectors, const std::vector<int32_t>& category,
                               int64_t sample, int k, uint64_t seed, int rank = 0, int world_size = 1);

}  // namespace ringtrain::train
