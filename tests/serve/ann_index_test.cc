#include "serve/ann_index.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <set>

#include "ringtrain/core/error.h"
#include "ringtrain/serve/model.h"

namespace ringtrain::serve {
namespace {

TEST(AnnIndexTest, FaissHnswFindsNearlyAllExactNeighboursAndHonoursExclusions) {
  const int64_t n = 3000, dim = 16;
  Model model;
  model.rows = n;
  model.dim = dim;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> vectors(n * dim);
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += std::pow(vectors[r * dim + d] = normal(rng), 2);
    for (int64_t d = 0; d < dim; ++d) vectors[r * dim + d] /= static_cast<float>(std::sqrt(s));
  }
  model.packed = PackedCatalog(std::move(vectors), dim);
  if (!haveFaiss()) {
    EXPECT_THROW(buildAnnIndex(model), ConfigError);
    GTEST_SKIP() << "built without FAISS";
  }
  const auto index = buildAnnIndex(model);
  std::vector<std::vector<int64_t>> excludes(50);
  std::vector<Query> queries;
  for (int i = 0; i < 50; ++i) {
    excludes[i] = {i * 7};
    queries.push_back({model.row(i * 7), 10, &excludes[i]});
  }
  const auto approx = index->search(queries);
  const auto exact = topK(model.packed, queries);
  int64_t found = 0;
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(approx[i].size(), 10u);
    std::set<int64_t> truth;
    for (const auto& h : exact[i]) truth.insert(h.row);
    for (const auto& h : approx[i]) {
      EXPECT_NE(h.row, i * 7);  // the query item itself is excluded
      found += truth.count(h.row);
      double s = 0;
      for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(model.row(h.row)[d]) * model.row(i * 7)[d];
      EXPECT_NEAR(h.score, s, 1e-4);
    }
  }
  EXPECT_GE(static_cast<double>(found) / 500.0, 0.9);  // 16 dims, 3,000 items: HNSW is nearly exact
}

}  // namespace
}  // namespace ringtrain::serve
