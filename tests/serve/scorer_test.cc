#include "ringtrain/serve/scorer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

namespace ringtrain::serve {
namespace {

std::vector<float> randomUnitRows(int64_t n, int64_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n * dim));
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += std::pow(v[r * dim + d] = normal(rng), 2);
    for (int64_t d = 0; d < dim; ++d) v[r * dim + d] /= static_cast<float>(std::sqrt(s));
  }
  return v;
}

// Same result up to float rounding: scores agree position by position, and where two scores are not tied
// the rows agree too.
void expectSameTopK(const std::vector<Hit>& got, const std::vector<Hit>& want, const std::vector<float>& rows,
                    int64_t dim, const float* query) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i].score, want[i].score, 1e-5) << "position " << i;
    double truth = 0;
    for (int64_t d = 0; d < dim; ++d) truth += static_cast<double>(rows[got[i].row * dim + d]) * query[d];
    EXPECT_NEAR(got[i].score, truth, 1e-5) << "row " << got[i].row;
    if (i > 0) EXPECT_GE(got[i - 1].score, got[i].score);
  }
}

TEST(ScorerTest, BatchedKernelMatchesBruteForce) {
  for (const int64_t dim : {1, 3, 16, 64, 65}) {
    for (const int64_t n : {1, 15, 16, 17, 1000, 1037}) {
      const auto rows = randomUnitRows(n, dim, 7 + n + dim);
      const PackedCatalog catalog(rows.data(), n, dim);
      for (const int batch : {1, 5, 6, 7, 12, 13, 25, 64}) {
        const auto qs = randomUnitRows(batch, dim, 99 + batch);
        std::vector<std::vector<int64_t>> excludes(batch);
        std::vector<Query> queries;
        for (int b = 0; b < batch; ++b) {
          excludes[b] = {b % n, (b * 31 + 5) % n};
          queries.push_back({qs.data() + b * dim, 1 + (b * 7) % 20, &excludes[b]});
        }
        const auto got = topK(catalog, queries);
        ASSERT_EQ(static_cast<int>(got.size()), batch);
        for (int b = 0; b < batch; ++b) {
          SCOPED_TRACE(::testing::Message() << "dim " << dim << " n " << n << " batch " << batch << " query " << b);
          const auto want = bruteForceTopK(rows.data(), n, dim, queries[b].vector, queries[b].k, excludes[b]);
          expectSameTopK(got[b], want, rows, dim, queries[b].vector);
          for (const Hit& h : got[b]) {
            EXPECT_NE(h.row, excludes[b][0]);
            EXPECT_NE(h.row, excludes[b][1]);
          }
        }
      }
    }
  }
}

// A query's answer must not depend on the requests it was batched with: the same bits alone and in any
// batch position.
TEST(ScorerTest, BatchingDoesNotChangeAnyScore) {
  const int64_t n = 777, dim = 48;
  const auto rows = randomUnitRows(n, dim, 5);
  const PackedCatalog catalog(rows.data(), n, dim);
  const int batch = 29;
  const auto qs = randomUnitRows(batch, dim, 6);
  std::vector<Query> queries;
  for (int b = 0; b < batch; ++b) queries.push_back({qs.data() + b * dim, 10, nullptr});
  const auto together = topK(catalog, queries);
  for (int b = 0; b < batch; ++b) {
    const auto alone = topK(catalog, {queries[b]});
    ASSERT_EQ(alone[0].size(), together[b].size());
    for (size_t i = 0; i < alone[0].size(); ++i) {
      EXPECT_EQ(alone[0][i].row, together[b][i].row) << "query " << b << " position " << i;
      EXPECT_EQ(alone[0][i].score, together[b][i].score) << "query " << b << " position " << i;
    }
  }
}

// tests/CMakeLists.txt runs these tests again with RINGTRAIN_SCORER_SIMD=avx2 and =none: check that the cap
// took effect, so those runs really cover the narrower kernels.
TEST(ScorerTest, KernelFollowsTheSimdCap) {
  const char* cap = std::getenv("RINGTRAIN_SCORER_SIMD");
  const std::string name = simdKernelName();
  if (cap != nullptr && std::string(cap) == "none") {
    EXPECT_EQ(name, "generic");
    EXPECT_FALSE(usingSimdKernel());
  } else if (cap != nullptr && std::string(cap) == "avx2") {
    EXPECT_NE(name, "avx512");
  } else {
    EXPECT_TRUE(name == "avx512" || name == "avx2" || name == "generic") << name;
    EXPECT_EQ(usingSimdKernel(), name != "generic");
  }
}

TEST(ScorerTest, TiesBreakByRowAndKLargerThanCatalog) {
  // Four identical rows: every score ties, so rows come back in order.
  const std::vector<float> rows = {1, 0, 1, 0, 1, 0, 1, 0};
  const PackedCatalog catalog(rows.data(), 4, 2);
  const float q[2] = {1, 0};
  const std::vector<int64_t> exclude = {1};
  const auto got = topK(catalog, {{q, 10, &exclude}});
  ASSERT_EQ(got[0].size(), 3u);
  EXPECT_EQ(got[0][0].row, 0);
  EXPECT_EQ(got[0][1].row, 2);
  EXPECT_EQ(got[0][2].row, 3);
}

}  // namespace
}  // namespace ringtrain::serve
