#include "ddp/row_sum.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>

#include "ringtrain/core/error.h"

namespace ringtrain::ddp::detail {
namespace {

// Rows as the tests hold them: ids and row-major values, which RowBlocks borrow.
template <typename T>
struct Rows {
  std::vector<int64_t> ids;
  std::vector<T> values;
  RowBlock block() const { return {ids.data(), values.data(), static_cast<int64_t>(ids.size())}; }
};

// The reference: for each id (ascending) its rows added in block order, then input order, then divided.
template <typename T>
std::map<int64_t, std::vector<T>> referenceSum(const std::vector<Rows<T>>& blocks, int64_t width, T divisor) {
  std::map<int64_t, std::vector<T>> sums;
  for (const auto& b : blocks) {
    for (size_t i = 0; i < b.ids.size(); ++i) {
      auto [it, fresh] = sums.try_emplace(b.ids[i], b.values.begin() + i * width, b.values.begin() + (i + 1) * width);
      if (!fresh) {
        for (int64_t j = 0; j < width; ++j) it->second[j] += b.values[i * width + j];
      }
    }
  }
  for (auto& [id, row] : sums) {
    for (T& v : row) v /= divisor;
  }
  return sums;
}

template <typename T>
Rows<T> randomRows(std::mt19937& rng, int64_t count, int64_t table_rows, int64_t width, bool ascending_distinct) {
  Rows<T> rows;
  std::uniform_int_distribution<int64_t> id(0, table_rows - 1);
  std::uniform_real_distribution<double> value(-1, 1);
  for (int64_t i = 0; i < count; ++i) rows.ids.push_back(id(rng));
  if (ascending_distinct) {
    std::sort(rows.ids.begin(), rows.ids.end());
    rows.ids.erase(std::unique(rows.ids.begin(), rows.ids.end()), rows.ids.end());
  }
  for (size_t i = 0; i < rows.ids.size() * width; ++i) rows.values.push_back(static_cast<T>(value(rng)));
  return rows;
}

template <typename T>
void expectEqualsReference(const std::map<int64_t, std::vector<T>>& want, const std::vector<int64_t>& ids,
                           const std::vector<T>& values, int64_t width) {
  ASSERT_EQ(ids.size(), want.size());
  size_t k = 0;
  for (const auto& [id, row] : want) {
    ASSERT_EQ(ids[k], id) << "position " << k;
    for (int64_t j = 0; j < width; ++j) ASSERT_EQ(values[k * width + j], row[j]) << "id " << id << " column " << j;
    ++k;
  }
}

// A rank's own rows: duplicates within and across blocks, ids at both ends of the table, odd widths; the
// scratch is reused call after call.
template <typename T>
void summerMatchesReference() {
  std::mt19937 rng(5);
  RowSummer summer;
  for (int64_t table_rows : {1, 63, 64, 65, 1000, 100003}) {
    for (int64_t width : {1, 3, 64}) {
      std::vector<Rows<T>> blocks = {randomRows<T>(rng, 200, table_rows, width, false),
                                     randomRows<T>(rng, 0, table_rows, width, false),
                                     randomRows<T>(rng, 57, table_rows, width, false)};
      blocks[2].ids.front() = 0;
      blocks[2].ids.back() = table_rows - 1;
      std::vector<RowBlock> view;
      for (const auto& b : blocks) view.push_back(b.block());
      const int64_t distinct = summer.mark(view, table_rows);
      std::vector<int64_t> ids(distinct);
      std::vector<T> values(distinct * width, T(-7));
      summer.sum<T>(view, width, ids.data(), values.data());
      expectEqualsReference(referenceSum(blocks, width, T(1)), ids, values, width);
    }
  }
}

TEST(RowSummer, SumsOwnRowsLikeTheReferenceFloat) { summerMatchesReference<float>(); }
TEST(RowSummer, SumsOwnRowsLikeTheReferenceDouble) { summerMatchesReference<double>(); }

// Split by owner (id % world, powers of two and not), each owner's share must be the reference's rows of
// that owner, ascending and bit for bit; an owner with no rows gets none.
template <typename T>
void summerByOwnerMatchesReference() {
  std::mt19937 rng(11);
  RowSummer summer;
  for (int world : {1, 2, 3, 8, 200}) {
    for (int64_t width : {1, 64}) {
      const int64_t table_rows = 1000;
      std::vector<Rows<T>> blocks = {randomRows<T>(rng, 300, table_rows, width, false),
                                     randomRows<T>(rng, 40, table_rows, width, false)};
      std::vector<RowBlock> view;
      for (const auto& b : blocks) view.push_back(b.block());
      const int64_t distinct = summer.mark(view, table_rows);
      std::vector<int64_t> counts(world, -1);
      summer.ownerCounts(world, counts.data());
      std::map<int, std::map<int64_t, std::vector<T>>> want;  // owner -> id -> row
      for (const auto& [id, row] : referenceSum(blocks, width, T(1))) want[static_cast<int>(id % world)][id] = row;
      int64_t total = 0;
      std::vector<std::vector<int64_t>> ids(world);
      std::vector<std::vector<T>> values(world);
      std::vector<int64_t*> id_out(world);
      std::vector<T*> value_out(world);
      for (int o = 0; o < world; ++o) {
        EXPECT_EQ(counts[o], static_cast<int64_t>(want[o].size())) << "world " << world << " owner " << o;
        total += counts[o];
        ids[o].assign(counts[o], -1);
        values[o].assign(counts[o] * width, T(-7));
        id_out[o] = ids[o].data();
        value_out[o] = values[o].data();
      }
      ASSERT_EQ(total, distinct);
      summer.sumByOwner<T>(view, width, world, id_out.data(), value_out.data());
      for (int o = 0; o < world; ++o) expectEqualsReference(want[o], ids[o], values[o], width);
    }
  }
}

TEST(RowSummer, SumsOwnRowsSplitByOwnerLikeTheReferenceFloat) { summerByOwnerMatchesReference<float>(); }
TEST(RowSummer, SumsOwnRowsSplitByOwnerLikeTheReferenceDouble) { summerByOwnerMatchesReference<double>(); }

TEST(RowSummer, RowOutsideTheTableThrowsAndLeavesNothingMarked) {
  RowSummer summer;
  Rows<float> bad{{3, 10, 4}, std::vector<float>(3, 1.0f)};
  EXPECT_THROW(summer.mark({bad.block()}, 10), Error);
  Rows<float> negative{{-1}, {1.0f}};
  EXPECT_THROW(summer.mark({negative.block()}, 10), Error);
  EXPECT_THROW(summer.mark({}, RowSummer::kMaxTableRows + 1), Error);
  // Ids 3 and 4 were marked before the first throw: had they stayed marked, 3 would not count as new here.
  Rows<float> good{{7, 3, 7}, {1.0f, 5.0f, 2.0f}};
  ASSERT_EQ(summer.mark({good.block()}, 10), 2);
  int64_t ids[2] = {-1, -1};
  float values[2] = {0, 0};
  summer.sum<float>({good.block()}, 1, ids, values);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(ids[1], 7);
  EXPECT_EQ(values[0], 5.0f);
  EXPECT_EQ(values[1], 3.0f);
}

TEST(RowSummer, ResetDropsAnUnsummedMark) {
  RowSummer summer;
  Rows<float> a{{1, 2}, {1.0f, 1.0f}};
  ASSERT_EQ(summer.mark({a.block()}, 5), 2);
  summer.reset();
  Rows<float> b{{1, 4}, {2.0f, 2.0f}};
  ASSERT_EQ(summer.mark({b.block()}, 5), 2);  // 1 counts again: reset() cleared it
  summer.reset();
  // Without reset(), a stale mark is caught before sum() writes past its output.
  ASSERT_EQ(summer.mark({a.block()}, 5), 2);
  Rows<float> c{{4}, {1.0f}};
  ASSERT_EQ(summer.mark({c.block()}, 5), 1);
  int64_t id = -1;
  float value = 0;
  EXPECT_THROW(summer.sum<float>({c.block()}, 1, &id, &value), Error);
}

// Exchanged blocks (each ascending and distinct) from several ranks, some empty, overlapping partly. The
// average must equal a true division bit for bit, powers of two (a multiplication inside) included.
template <typename T>
void mergeMatchesReference() {
  std::mt19937 rng(9);
  for (int world : {1, 2, 3, 4, 6, 8}) {
    for (int64_t width : {1, 5, 64}) {
      std::vector<Rows<T>> blocks;
      for (int r = 0; r < world; ++r) blocks.push_back(randomRows<T>(rng, r == 1 ? 0 : 300, 2000, width, true));
      std::vector<RowBlock> view;
      for (const auto& b : blocks) view.push_back(b.block());
      const int64_t distinct = countMerged(view, 2000);
      std::vector<int64_t> ids(distinct);
      std::vector<T> values(distinct * width);
      sumMerged<T>(view, width, static_cast<T>(world), ids.data(), values.data());
      expectEqualsReference(referenceSum(blocks, width, static_cast<T>(world)), ids, values, width);
    }
  }
}

TEST(RowMerge, SumsExchangedBlocksLikeTheReferenceFloat) { mergeMatchesReference<float>(); }
TEST(RowMerge, SumsExchangedBlocksLikeTheReferenceDouble) { mergeMatchesReference<double>(); }

// The sparse sync sums exchanged blocks with a RowSummer and an ExactDivider where the table fits one, and
// merges them where it does not: both ways must give the same bits.
template <typename T>
void summerEqualsMergeOnExchangedBlocks() {
  std::mt19937 rng(13);
  RowSummer summer;
  for (int world : {1, 2, 3, 8}) {
    std::vector<Rows<T>> blocks;
    for (int r = 0; r < world; ++r) blocks.push_back(randomRows<T>(rng, r == 1 ? 0 : 400, 3000, 64, true));
    std::vector<RowBlock> view;
    for (const auto& b : blocks) view.push_back(b.block());
    const int64_t distinct = countMerged(view, 3000);
    std::vector<int64_t> merged_ids(distinct), summed_ids(distinct);
    std::vector<T> merged(distinct * 64), summed(distinct * 64);
    sumMerged<T>(view, 64, static_cast<T>(world), merged_ids.data(), merged.data());
    ASSERT_EQ(summer.mark(view, 3000), distinct);
    summer.sum<T>(view, 64, summed_ids.data(), summed.data());
    ExactDivider<T>(static_cast<T>(world)).apply(summed.data(), distinct * 64);
    EXPECT_EQ(summed_ids, merged_ids) << "world " << world;
    for (size_t i = 0; i < merged.size(); ++i) ASSERT_EQ(summed[i], merged[i]) << "world " << world << " at " << i;
  }
}

TEST(RowMerge, SummerAndMergeGiveTheSameBitsFloat) { summerEqualsMergeOnExchangedBlocks<float>(); }
TEST(RowMerge, SummerAndMergeGiveTheSameBitsDouble) { summerEqualsMergeOnExchangedBlocks<double>(); }

TEST(ExchangedRows, AcceptAscendingDistinctRowsInsideTheTableAndNameTheSenderOtherwise) {
  Rows<float> fine{{0, 1, 5, 8}, {1.0f, 1.0f, 1.0f, 1.0f}};
  EXPECT_NO_THROW(checkExchangedRows(fine.block(), 9, 1, 3));
  EXPECT_NO_THROW(checkExchangedRows(Rows<float>{}.block(), 9, 1, 3));
  const std::vector<std::pair<Rows<float>, std::string>> bad = {
      {{{1, 1}, {1.0f, 1.0f}}, "not ascending and distinct at position 1"},
      {{{4, 3}, {1.0f, 1.0f}}, "not ascending and distinct at position 1"},
      {{{1, 9}, {1.0f, 1.0f}}, "row 9 of table 1 outside the table's [0, 9)"},
      {{{-1}, {1.0f}}, "row -1 of table 1 outside"},
  };
  for (const auto& [rows, expected] : bad) {
    try {
      checkExchangedRows(rows.block(), 9, 1, 3);
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("from rank 3"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
}

TEST(RowMerge, RefusesBlocksThatAreNotAscendingOrOutsideTheTable) {
  Rows<float> fine{{1, 5}, {1.0f, 1.0f}};
  Rows<float> repeated{{2, 2}, {1.0f, 1.0f}};
  Rows<float> descending{{4, 3}, {1.0f, 1.0f}};
  Rows<float> outside{{1, 9}, {1.0f, 1.0f}};
  for (const auto* bad : {&repeated, &descending, &outside}) {
    try {
      countMerged({fine.block(), bad->block()}, 9);
      ADD_FAILURE() << "accepted a bad block";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("block 1"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ringtrain::ddp::detail
