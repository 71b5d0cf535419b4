#include "ringtrain/serve/scorer.h"

#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "serve/scorer_paths.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <limits>
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

// A catalog that adopts its rows keeps them as its row-major copy (a served model holds them nowhere else),
// under every SIMD cap, and answers exactly as one built from a pointer.
TEST(ScorerTest, AdoptedRowsStayRowMajorAndScoreTheSame) {
  const int64_t n = 300, dim = 20;
  const auto rows = randomUnitRows(n, dim, 8);
  const PackedCatalog copied(rows.data(), n, dim);
  const PackedCatalog adopted(std::vector<float>(rows), dim);
  ASSERT_EQ(adopted.rows(), n);
  ASSERT_TRUE(adopted.hasRows());
  EXPECT_EQ(std::memcmp(adopted.rowFp32(0), rows.data(), rows.size() * sizeof(float)), 0);
  const auto qs = randomUnitRows(5, dim, 9);
  std::vector<Query> queries;
  for (int b = 0; b < 5; ++b) queries.push_back({qs.data() + b * dim, 7, nullptr});
  const auto a = topK(adopted, queries), c = topK(copied, queries);
  for (int b = 0; b < 5; ++b) {
    ASSERT_EQ(a[b].size(), c[b].size());
    for (size_t i = 0; i < a[b].size(); ++i) {
      EXPECT_EQ(a[b][i].row, c[b][i].row) << "query " << b << " position " << i;
      EXPECT_EQ(a[b][i].score, c[b][i].score) << "query " << b << " position " << i;
    }
  }
  EXPECT_THROW(PackedCatalog(std::vector<float>(7), 2), Error) << "7 values are not whole rows of 2";
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
    EXPECT_TRUE(name == "avx2" || name == "generic") << name;
  } else if (cap != nullptr && std::string(cap) == "avx512") {
    EXPECT_NE(name, "avx512-bf16");
    EXPECT_FALSE(bf16PrefilterAvailable());
  } else {
    EXPECT_TRUE(name == "avx512-bf16" || name == "avx512" || name == "avx2" || name == "generic") << name;
    EXPECT_EQ(usingSimdKernel(), name != "generic");
    EXPECT_EQ(bf16PrefilterAvailable(), name == "avx512-bf16");
  }
  const std::vector<float> row = {1, 0};
  EXPECT_EQ(PackedCatalog(row.data(), 1, 2).hasBf16(), bf16PrefilterAvailable());
}

// The bfloat16 prefilter must give the fp32 scan's answer bit for bit, also where bfloat16 cannot tell
// rows apart: near-duplicate rows (differences far below bfloat16's 2^-8), exact duplicates, rows and
// queries that are not unit vectors, odd dimensions, k up to past the catalog.
TEST(ScorerTest, Bf16PrefilterGivesTheFp32AnswerBitForBit) {
  if (!bf16PrefilterAvailable()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or capped)";
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.2f, 3.0f);
  int compared = 0, ranked_differently = 0;
  for (const int64_t dim : {1, 2, 3, 31, 64, 65}) {
    for (const int64_t n : {1, 33, 1037, 4000}) {
      // Clusters of near-duplicates: a few centres, each row a centre plus noise of 1e-4, some repeated
      // exactly, rows scaled to norms between 0.2 and 3.
      const auto centres = randomUnitRows(7, dim, 3 + dim);
      std::vector<float> rows(static_cast<size_t>(n * dim));
      for (int64_t r = 0; r < n; ++r) {
        const float scale = r % 5 == 0 ? 1.0f : uniform(rng);
        for (int64_t d = 0; d < dim; ++d) {
          rows[r * dim + d] = r % 11 == 3 && r > 0 ? rows[(r - 1) * dim + d]
                                                   : scale * (centres[(r % 7) * dim + d] + 1e-4f * normal(rng));
        }
      }
      const PackedCatalog catalog(rows.data(), n, dim);
      ASSERT_TRUE(catalog.hasBf16());
      const int batch = 17;
      auto qs = randomUnitRows(batch, dim, 40 + n);
      for (int b = 0; b < batch; b += 3) {  // some queries sit on a centre, one is not a unit vector
        for (int64_t d = 0; d < dim; ++d) qs[b * dim + d] = (b == 3 ? 5.0f : 1.0f) * centres[(b % 7) * dim + d];
      }
      std::vector<std::vector<int64_t>> excludes(batch);
      std::vector<Query> queries;
      for (int b = 0; b < batch; ++b) {
        excludes[b] = {b % n};
        const int k = b == 0 ? static_cast<int>(n) + 5 : 1 + (b * 13) % 100;
        queries.push_back({qs.data() + b * dim, k, &excludes[b]});
      }
      const auto fast = topKBf16Prefilter(catalog, queries);
      const auto reference = topKFp32Scan(catalog, queries);
      for (int b = 0; b < batch; ++b) {
        SCOPED_TRACE(::testing::Message() << "dim " << dim << " n " << n << " query " << b);
        ASSERT_EQ(fast[b].size(), reference[b].size());
        for (size_t i = 0; i < fast[b].size(); ++i) {
          ASSERT_EQ(fast[b][i].row, reference[b][i].row) << "position " << i;
          ASSERT_EQ(fast[b][i].score, reference[b][i].score) << "position " << i;
        }
        ++compared;
      }
      // How often bfloat16 alone would have ranked the top-k differently: the rescoring is what fixes it,
      // so this test must include such cases to mean anything.
      for (int b = 0; b < batch; ++b) {
        std::vector<std::pair<float, int64_t>> approx;
        for (int64_t r = 0; r < n; ++r) {
          if (r == excludes[b][0]) continue;
          float acc = 0.0f;
          for (int64_t d = 0; d < dim; ++d) {
            const auto round = [](float x) {
              uint32_t bits;
              std::memcpy(&bits, &x, 4);
              bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
              std::memcpy(&x, &bits, 4);
              return x;
            };
            acc += round(rows[r * dim + d]) * round(qs[b * dim + d]);
          }
          approx.emplace_back(-acc, r);
        }
        const size_t k = std::min(approx.size(), reference[b].size());
        std::partial_sort(approx.begin(), approx.begin() + k, approx.end());
        for (size_t i = 0; i < k; ++i) {
          if (approx[i].second != reference[b][i].row) {
            ++ranked_differently;
            break;
          }
        }
      }
    }
  }
  EXPECT_EQ(compared, 6 * 4 * 17);
  EXPECT_GT(ranked_differently, 20) << "the data no longer exercises the rescoring";
}

// A case built near the bound: every value of row 40 rounds down in bfloat16 by almost half a step, so
// bfloat16 scores it 1.0 against row 0's exact 1.00378, while in fp32 row 40 wins (1.00390). Row 40 sits in
// a later panel than row 0, so the floor it must clear is the one set during the scan. It is kept only
// with a margin of at least 0.0038, a quarter of the proven 0.0157 (twice the bound B = 0.0079): a margin
// of B/2 or less fails here. (Within the bound, bfloat16 can be wrong by about 0.004 per side here, so a
// case that needs the whole 2B would take errors of opposite sign on two rows tied in fp32.)
TEST(ScorerTest, Bf16PrefilterKeepsARowThatBf16RanksBelowAnother) {
  if (!bf16PrefilterAvailable()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or capped)";
  const int64_t dim = 64, winner = 40;
  const float eighth = 0.125f;
  const float just_below_half_step = (1.0f + std::ldexp(1.0f, -8) - std::ldexp(1.0f, -20)) * eighth;
  std::vector<float> rows((winner + 1) * dim, 0.0f);
  for (int64_t d = 0; d < dim; ++d) {
    rows[winner * dim + d] = just_below_half_step;
    rows[d] = eighth;  // row 0: exact in bfloat16
  }
  rows[0] = eighth + 31 * std::ldexp(1.0f, -10);
  const std::vector<float> q(dim, eighth);
  const PackedCatalog catalog(rows.data(), winner + 1, dim);
  const std::vector<Query> queries = {{q.data(), 1, nullptr}};
  const auto reference = topKFp32Scan(catalog, queries);
  ASSERT_EQ(reference[0].size(), 1u);
  ASSERT_EQ(reference[0][0].row, winner);
  const auto fast = topKBf16Prefilter(catalog, queries);
  ASSERT_EQ(fast[0].size(), 1u);
  EXPECT_EQ(fast[0][0].row, winner);
  EXPECT_EQ(fast[0][0].score, reference[0][0].score);
}

// Where the bound does not hold or the window holds too many rows, the prefilter answers with the fp32
// scan: the same rows and the same bits for a zero query, a query with a denormal value, an infinite or a
// huge one, and a query inside a dense cluster of near-duplicates (thousands of rows within the window).
TEST(ScorerTest, Bf16PrefilterFallsBackWhereItsBoundDoesNot) {
  if (!bf16PrefilterAvailable()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or capped)";
  const int64_t n = 6000, dim = 16;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal;
  const auto centre = randomUnitRows(1, dim, 8);
  std::vector<float> rows(static_cast<size_t>(n * dim));
  for (int64_t r = 0; r < n; ++r) {
    double norm2 = 0;
    for (int64_t d = 0; d < dim; ++d) norm2 += std::pow(rows[r * dim + d] = centre[d] + 0.001f * normal(rng), 2);
    for (int64_t d = 0; d < dim; ++d) rows[r * dim + d] /= static_cast<float>(std::sqrt(norm2));
  }
  const PackedCatalog catalog(rows.data(), n, dim);
  ASSERT_TRUE(catalog.hasBf16());
  std::vector<std::vector<float>> qs = {std::vector<float>(dim, 0.0f), centre, centre, centre, centre};
  qs[2][1] = std::ldexp(1.0f, -130);  // denormal
  qs[3][0] = std::numeric_limits<float>::infinity();
  for (float& x : qs[4]) x *= 3e37f;  // finite, but its norm is near overflow
  std::vector<Query> queries;
  for (const auto& v : qs) queries.push_back({v.data(), 5, nullptr});
  const auto fast = topKBf16Prefilter(catalog, queries);
  const auto reference = topKFp32Scan(catalog, queries);
  const auto bits = [](float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
  };
  for (size_t i = 0; i < queries.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "query " << i);
    ASSERT_EQ(fast[i].size(), reference[i].size());
    for (size_t j = 0; j < fast[i].size(); ++j) {
      EXPECT_EQ(fast[i][j].row, reference[i][j].row) << "position " << j;
      EXPECT_EQ(bits(fast[i][j].score), bits(reference[i][j].score)) << "position " << j;
    }
  }
}

TEST(ScorerTest, NoBf16PanelsForRowsItsBoundDoesNotCover) {
  if (!bf16PrefilterAvailable()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or capped)";
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          std::ldexp(1.0f, -130), 1e30f}) {
    const std::vector<float> rows = {1, 0, bad, 1};
    EXPECT_FALSE(PackedCatalog(rows.data(), 2, 2).hasBf16()) << bad;
  }
  const std::vector<float> fine = {1, 0, 0, 1};
  EXPECT_TRUE(PackedCatalog(fine.data(), 2, 2).hasBf16());
}

TEST(ScorerTest, Bf16MarginBoundsTheRoundingOfUnitVectors) {
  // Rounding both sides to 8 significant bits errs by at most 2^-7 of |q||v| (plus sums' rounding).
  EXPECT_GT(bf16ScoreMargin(64, 1.0, 1.0), std::ldexp(1.0, -7));
  EXPECT_LT(bf16ScoreMargin(64, 1.0, 1.0), 0.0080);
  EXPECT_NEAR(bf16ScoreMargin(64, 2.0, 3.0), 6 * bf16ScoreMargin(64, 1.0, 1.0), 1e-9);
  EXPECT_GT(bf16ScoreMargin(1000, 1.0, 1.0), bf16ScoreMargin(10, 1.0, 1.0));
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
