#include "ringtrain/train/evaluation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "model/cpu_gemm.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/model/sgns_model.h"

namespace ringtrain::train {
namespace {

// Queries scored at once: up to 256, fewer for large catalogs, so that a block's scores (and the
// comparisons made of them) stay near 64 MiB: at 256 queries a 1M-item catalog took 3.8 GB.
constexpr int64_t kMaxQueryBlock = 256;
constexpr int64_t kScoresPerBlock = int64_t{16} << 20;
size_t queryBlock(int64_t candidates) {
  return static_cast<size_t>(std::clamp<int64_t>(kScoresPerBlock / std::max<int64_t>(candidates, 1), 1, kMaxQueryBlock));
}

at::Tensor normalizedRows(const at::Tensor& vectors) {
  const at::Tensor v = vectors.detach().to(at::kFloat).contiguous();
  return (v / v.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12)).contiguous();
}

// scores [Q, N] = a [Q, D] @ bt [D, N] (bt: candidates transposed, contiguous), into the first Q rows of
// `buffer` (allocated once for all blocks: a block's scores are tens of MiB, above malloc's mmap threshold,
// and a fresh mapping for each block spent more time in page faults than the product took).
at::Tensor scoreAll(const at::Tensor& a, const at::Tensor& bt, at::Tensor& buffer) {
  if (!buffer.defined()) buffer = at::empty({a.size(0), bt.size(1)}, a.options());
  at::Tensor out = buffer.narrow(0, 0, a.size(0));
  model::detail::gemm(a.contiguous(), false, bt, false, out, 0.0f);
  return out;
}

// Says every 10 s how far a long evaluation (a large catalog, many queries) has come, on rank 0: minutes
// of silence after the last training step look like a hang.
class EvalProgress {
 public:
  EvalProgress(const char* what, size_t total, int rank) : what_(what), total_(total), rank_(rank) {}
  void at(size_t done) {
    if (rank_ != 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return;
    const double spent = std::chrono::duration<double>(now - start_).count();
    info("eval: {} {} of {} on this rank in {:.0f} s (about {:.0f} s left)", what_, done, total_, spent,
         spent * static_cast<double>(total_ - done) / static_cast<double>(std::max<size_t>(done, 1)));
    next_ = now + kEvery;
  }

 private:
  static constexpr std::chrono::seconds kEvery{10};
  const char* what_;
  size_t total_;
  int rank_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point next_ = start_ + kEvery;
};

// Per row of `scores`, how many scores are above `target[row]` and how many level with it (the target
// itself included). On the host one pass over each row: LibTorch's (scores > t).sum(1) reduced a bool
// tensor several times slower than the product that made the scores (about 13 ms per query at 1M items).
void countAgainstTargets(const at::Tensor& scores, const at::Tensor& target, std::vector<int64_t>& higher,
                         std::vector<int64_t>& level) {
  const int64_t rows = scores.size(0), cols = scores.size(1);
  higher.assign(static_cast<size_t>(rows), 0);
  level.assign(static_cast<size_t>(rows), 0);
  if (!scores.is_cpu()) {
    const at::Tensor above = (scores > target).sum(1).to(at::kCPU);
    const at::Tensor same = (scores == target).sum(1).to(at::kCPU);
    std::copy_n(above.data_ptr<int64_t>(), rows, higher.begin());
    std::copy_n(same.data_ptr<int64_t>(), rows, level.begin());
    return;
  }
  RT_CHECK(scores.is_contiguous() && scores.scalar_type() == at::kFloat, "scores must be contiguous floats");
  const at::Tensor t = target.contiguous();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores.data_ptr<float>() + r * cols;
    const float bar = t.data_ptr<float>()[r];
    int64_t above = 0, same = 0;  // counted apart, branch-free: the loop vectorizes
    for (int64_t c = 0; c < cols; ++c) {
      above += row[c] > bar;
      same += row[c] == bar;
    }
    higher[static_cast<size_t>(r)] = above;
    level[static_cast<size_t>(r)] = same;
  }
}

int64_t usedQueries(const std::vector<EvalQuery>& queries, int64_t max_queries) {
  const auto n = static_cast<int64_t>(queries.size());
  return max_queries > 0 ? std::min(n, max_queries) : n;
}

void checkQuery(const EvalQuery& q, int64_t vocab, int64_t index) {
  auto bad = [&](int64_t id) { return id < 0 || id >= vocab; };
  if (bad(q.target)) RT_THROW(DataError, "held-out query ", index, ": target id ", q.target, " outside [0, ", vocab, ")");
  for (int32_t id : q.query) {
    if (bad(id)) RT_THROW(DataError, "held-out query ", index, ": item id ", id, " outside [0, ", vocab, ")");
  }
}

// The target behind `higher` candidates and level with `ties` others: the sums a random order among the
// tied would give on average. Giving the target the best place instead would let a model that scores
// every item alike (a collapsed one) reach HR 1.
void addRank(RankingSums& sums, int64_t higher, int64_t ties, int k) {
  sums.count += 1;
  const double share = 1.0 / static_cast<double>(ties + 1);
  for (int64_t place = higher; place <= higher + ties && place < k; ++place) {
    sums.hits += share;
    sums.ndcg_sum += share / std::log2(static_cast<double>(place) + 2.0);
  }
}

// The query's distinct items other than its target, into `out`: the candidates a query takes out.
void itemsTakenOut(const EvalQuery& query, std::vector<int32_t>& out) {
  out.assign(query.query.begin(), query.query.end());
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  out.erase(std::remove(out.begin(), out.end(), query.target), out.end());
}

// A target training never saw: behind every seen candidate outside the query, level with the other unseen
// ones outside it.
void addUnseenTargetRank(RankingSums& sums, const EvalQuery& query, const std::vector<uint8_t>& unseen,
                         int64_t seen_total, int k) {
  std::vector<int32_t> items;
  itemsTakenOut(query, items);
  int64_t higher = seen_total;
  int64_t ties = static_cast<int64_t>(unseen.size()) - seen_total - 1;
  for (int32_t id : items) {
    if (unseen[static_cast<size_t>(id)]) {
      --ties;
    } else {
      --higher;
    }
  }
  addRank(sums, higher, ties, k);
}

}  // namespace

at::Tensor itemVectors(const model::SgnsModel& model) { return model.queryVectors(); }

RankingSums evaluateRanking(const at::Tensor& vectors, const std::vector<EvalQuery>& queries, int k, int rank,
                            int world_size, int64_t max_queries) {
  RankingOptions options;
  options.k = k;
  options.max_queries = max_queries;
  return evaluateRanking(vectors, vectors, queries, options, rank, world_size);
}

RankingSums evaluateRanking(const at::Tensor& query_vectors, const at::Tensor& candidate_vectors,
                            const std::vector<EvalQuery>& queries, const RankingOptions& options, int rank,
                            int world_size) {
  RT_CHECK(query_vectors.dim() == 2 && candidate_vectors.dim() == 2, "item vectors must be [V, D]");
  RT_CHECK(query_vectors.sizes() == candidate_vectors.sizes(), "query and candidate tables differ in shape: ",
           query_vectors.sizes(), " vs ", candidate_vectors.sizes());
  RT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "bad rank ", rank, " of ", world_size);
  RT_CHECK(options.recent_items >= 0, "recent_items must be >= 0, got ", options.recent_items);
  RT_CHECK(options.recent_decay >= 0.0 && options.recent_decay <= 1.0, "recent_decay must be in [0, 1], got ",
           options.recent_decay);
  const bool weighted = options.recent_decay != 1.0;
  at::NoGradGuard no_grad;
  const int k = options.k;
  const int64_t vocab = query_vectors.size(0);
  auto prepare = [&](const at::Tensor& t) {
    return options.cosine ? normalizedRows(t) : t.detach().to(at::kFloat).contiguous();
  };
  const at::Tensor vn = prepare(query_vectors);
  const at::Tensor vnt = prepare(candidate_vectors).t().contiguous();
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<uint8_t> unseen;
  at::Tensor unseen_columns;  // undefined when every candidate counts alike
  int64_t seen_total = vocab;
  if (options.train_counts != nullptr) {
    RT_CHECK_EQ(static_cast<int64_t>(options.train_counts->size()), vocab, "one training count per item");
    unseen.resize(static_cast<size_t>(vocab));
    std::vector<int64_t> columns;
    for (int64_t i = 0; i < vocab; ++i) {
      if ((*options.train_counts)[static_cast<size_t>(i)] > 0) continue;
      unseen[static_cast<size_t>(i)] = 1;
      columns.push_back(i);
    }
    seen_total = vocab - static_cast<int64_t>(columns.size());
    if (!columns.empty()) {
      unseen_columns = at::tensor(columns, long_opts).to(vn.device());
    }
  }
  RankingSums sums;
  std::vector<int64_t> mine;
  const int64_t n = usedQueries(queries, options.max_queries);
  for (int64_t i = rank; i < n; i += world_size) {
    checkQuery(queries[static_cast<size_t>(i)], vocab, i);
    if (!queries[static_cast<size_t>(i)].query.empty()) mine.push_back(i);
  }
  const size_t block = queryBlock(vocab);
  at::Tensor scores_buffer;
  std::vector<int64_t> higher, level;
  EvalProgress progress("held-out queries", mine.size(), rank);
  for (size_t start = 0; start < mine.size(); start += block) {
    progress.at(start);
    const size_t end = std::min(mine.size(), start + block);
    const auto q = static_cast<int64_t>(end - start);
    std::vector<int64_t> seg, flat, mask_row, mask_col, targets;
    std::vector<float> weight;  // per scored item, when weighted
    for (size_t b = start; b < end; ++b) {
      const EvalQuery& query = queries[static_cast<size_t>(mine[b])];
      const auto row = static_cast<int64_t>(b - start);
      const auto size = static_cast<int64_t>(query.query.size());
      const int64_t first_scored = options.recent_items > 0 ? std::max<int64_t>(0, size - options.recent_items) : 0;
      for (int64_t j = 0; j < size; ++j) {
        const int32_t id = query.query[static_cast<size_t>(j)];
        // An item training never saw says nothing as a query item either (its vector is its initial one).
        if (j >= first_scored && (unseen.empty() || !unseen[static_cast<size_t>(id)])) {
          seg.push_back(row);
          flat.push_back(id);
          if (weighted) weight.push_back(static_cast<float>(std::pow(options.recent_decay, size - 1 - j)));
        }
        if (id != query.target) {  // the query's own items are not candidates (the target always is)
          mask_row.push_back(row);
          mask_col.push_back(id);
        }
      }
      targets.push_back(query.target);
    }
    auto toTensor = [&](const std::vector<int64_t>& v) {
      return at::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())}, long_opts)
          .clone()
          .to(vn.device());
    };
    const at::Tensor seg_t = toTensor(seg), flat_t = toTensor(flat), tgt_t = toTensor(targets);
    // Sum of cosines to the query items = <sum of normalised query vectors, normalised candidate>; for
    // in_out the same with raw vectors.
    at::Tensor rows = vn.index_select(0, flat_t);
    if (weighted) {
      rows.mul_(at::from_blob(weight.data(), {static_cast<int64_t>(weight.size()), 1}, at::kFloat).to(vn.device()));
    }
    const at::Tensor qv = at::zeros({q, vn.size(1)}, vn.options()).index_add_(0, seg_t, rows);
    at::Tensor scores = scoreAll(qv, vnt, scores_buffer);
    if (!mask_row.empty()) scores.index_put_({toTensor(mask_row), toTensor(mask_col)}, at::scalar_tensor(neg_inf, scores.options()));
    if (unseen_columns.defined()) scores.index_fill_(1, unseen_columns, neg_inf);
    countAgainstTargets(scores, scores.gather(1, tgt_t.unsqueeze(1)), higher, level);
    const int64_t* ph = higher.data();
    const int64_t* pl = level.data();
    for (int64_t b = 0; b < q; ++b) {
      const EvalQuery& query = queries[static_cast<size_t>(mine[start + static_cast<size_t>(b)])];
      if (unseen_columns.defined() && unseen[static_cast<size_t>(query.target)]) {
        addUnseenTargetRank(sums, query, unseen, seen_total, k);
      } else if (pl[b] == 0) {  // a NaN score equals nothing, itself included: such a target is a miss
        addRank(sums, k, 0, k);
      } else {
        addRank(sums, ph[b], pl[b] - 1, k);
      }
    }
  }
  return sums;
}

RankingSums evaluatePopularity(const std::vector<int64_t>& item_counts, const std::vector<EvalQuery>& queries, int k,
                               int rank, int world_size, int64_t max_queries) {
  RT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "bad rank ", rank, " of ", world_size);
  const auto vocab = static_cast<int64_t>(item_counts.size());
  std::vector<int64_t> sorted = item_counts;
  std::sort(sorted.begin(), sorted.end());
  RankingSums sums;
  const int64_t n = usedQueries(queries, max_queries);
  std::vector<int32_t> excluded;
  for (int64_t i = rank; i < n; i += world_size) {
    const EvalQuery& q = queries[static_cast<size_t>(i)];
    checkQuery(q, vocab, i);
    if (q.query.empty()) continue;
    const int64_t ct = item_counts[static_cast<size_t>(q.target)];
    // Candidates with a strictly higher count and those with the same (the target aside), minus the
    // (distinct) query items among them.
    const auto [level_begin, level_end] = std::equal_range(sorted.begin(), sorted.end(), ct);
    int64_t higher = static_cast<int64_t>(sorted.end() - level_end);
    int64_t ties = static_cast<int64_t>(level_end - level_begin) - 1;
    itemsTakenOut(q, excluded);
    for (int32_t id : excluded) {
      const int64_t c = item_counts[static_cast<size_t>(id)];
      if (c > ct) --higher;
      if (c == ct) --ties;
    }
    addRank(sums, higher, ties, k);
  }
  return sums;
}

CategorySums categoryAgreement(const at::Tensor& vectors, const std::vector<int32_t>& category, int64_t sample, int k,
                               uint64_t seed, int rank, int world_size) {
  RT_CHECK(vectors.dim() == 2, "item vectors must be [V, D]");
  RT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "bad rank ", rank, " of ", world_size);
  RT_CHECK_EQ(static_cast<int64_t>(category.size()), vectors.size(0), "one category per item");
  at::NoGradGuard no_grad;
  std::vector<int64_t> known;
  for (size_t i = 0; i < category.size(); ++i) {
    if (category[i] >= 0) known.push_back(static_cast<int64_t>(i));
  }
  CategorySums sums;
  if (known.size() < 2 || sample <= 0 || k <= 0) return sums;
  const int kk = static_cast<int>(std::min<int64_t>(k, static_cast<int64_t>(known.size()) - 1));
  std::vector<int64_t> order = known;
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(static_cast<size_t>(std::min<int64_t>(sample, static_cast<int64_t>(order.size()))));

  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const at::Tensor known_t = at::from_blob(known.data(), {static_cast<int64_t>(known.size())}, long_opts).clone();
  const at::Tensor vn = normalizedRows(vectors);
  const at::Tensor cand = vn.index_select(0, known_t.to(vn.device()));
  const at::Tensor cand_t = cand.t().contiguous();
  std::vector<int64_t> mine;
  for (size_t s = static_cast<size_t>(rank); s < order.size(); s += static_cast<size_t>(world_size)) mine.push_back(order[s]);
  // Position of each item in `known`, to exclude an item from its own neighbours.
  std::vector<int64_t> pos(category.size(), -1);
  for (size_t i = 0; i < known.size(); ++i) pos[static_cast<size_t>(known[i])] = static_cast<int64_t>(i);
  const size_t block = queryBlock(static_cast<int64_t>(known.size()));
  at::Tensor scores_buffer;
  EvalProgress progress("items' neighbours", mine.size(), rank);
  for (size_t start = 0; start < mine.size(); start += block) {
    progress.at(start);
    const size_t end = std::min(mine.size(), start + block);
    std::vector<int64_t> ids(mine.begin() + static_cast<int64_t>(start), mine.begin() + static_cast<int64_t>(end));
    std::vector<int64_t> self;
    for (int64_t id : ids) self.push_back(pos[static_cast<size_t>(id)]);
    const auto b = static_cast<int64_t>(ids.size());
    const at::Tensor ids_t = at::from_blob(ids.data(), {b}, long_opts).clone().to(vn.device());
    const at::Tensor self_t = at::from_blob(self.data(), {b}, long_opts).clone().to(vn.device());
    at::Tensor scores = scoreAll(vn.index_select(0, ids_t), cand_t, scores_buffer);
    scores.scatter_(1, self_t.unsqueeze(1), -std::numeric_limits<float>::infinity());
    const at::Tensor top = std::get<1>(scores.topk(kk, 1)).to(at::kCPU).contiguous();
    const int64_t* pt = top.data_ptr<int64_t>();
    for (int64_t r = 0; r < b; ++r) {
      const int32_t c = category[static_cast<size_t>(ids[static_cast<size_t>(r)])];
      for (int j = 0; j < kk; ++j) {
        sums.neighbor_same += category[static_cast<size_t>(known[static_cast<size_t>(pt[r * kk + j])])] == c;
        sums.neighbor_total += 1;
      }
    }
  }
  // Random pairs: for each of this rank's sampled items, kk random other known items (seeded per item, so
  // the total does not depend on the world size).
  for (int64_t id : mine) {
    std::mt19937_64 pair_rng(seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(id + 1)));
    std::uniform_int_distribution<size_t> pick(0, known.size() - 1);
    const int32_t c = category[static_cast<size_t>(id)];
    for (int j = 0; j < kk;) {
      const int64_t other = known[pick(pair_rng)];
      if (other == id) continue;
      sums.random_same += category[static_cast<size_t>(other)] == c;
      sums.random_total += 1;
      ++j;
    }
  }
  return sums;
}

}  // namespace ringtrain::train
