// Evaluation of item embeddings: next-item / hidden-item retrieval (HR@k, NDCG@k), a popularity baseline,
// and neighbour-category agreement. Each function does this rank's share of the work (queries or sampled
// items with index % world_size == rank) and returns partial sums; the trainer adds them across ranks
// (allreduce of the fields) and derives the means.
//
// Ranking protocol: a query is a set of items (the rest of a basket, or the items before the target in a
// session) and one target. Score of candidate c = sum over query items q of cos(qvec[q], cvec[c]); the
// query's own items are excluded from the ranking; rank = number of candidates scoring strictly higher
// than the target (ties favour the target only as far as they are equal). Hit if rank < k; NDCG adds
// 1 / log2(rank + 2) when a hit. Scoring is batched: queries in blocks, one matmul against all candidates.
//
// Which vectors: an SGNS model trains <tower(in[a]), out[b]> for co-occurring a, b, so either table alone
// (cosine in[a]·in[b], "first-order" similarity through shared contexts) or the cross pair can be used.
// ringtrain uses the input-side vectors for both queries and candidates (tower(in) when a tower exists,
// else in), as word2vec exports them; the output table starts at zero and sees every item as a negative,
// so it is the noisier of the two. Comparing in vs in+out on the quality benchmarks is still to be done;
// itemVectors() below is the one place this choice is made.
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

// Ranks with cosine similarity; `vectors` [V, D] on any device (the work runs there). Queries whose
// target or items fall outside [0, V) throw DataError. max_queries > 0 uses only the first max_queries.
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
