#include "ddp/row_sum.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/prefetch.h"
#include "ringtrain/core/error.h"

namespace ringtrain::ddp::detail {

int64_t RowSummer::mark(const std::vector<RowBlock>& blocks, int64_t table_rows) {
  RT_CHECK(table_rows >= 0 && table_rows <= kMaxTableRows, "RowSummer: a table of ", table_rows,
           " rows (at most ", kMaxTableRows, ")");
  const size_t words = static_cast<size_t>((table_rows + 63) / 64);
  if (touched_.size() < words) touched_.resize(words, 0);
  if (slot_.size() < static_cast<size_t>(table_rows)) slot_.resize(static_cast<size_t>(table_rows));
  marked_ = 0;
  for (const RowBlock& b : blocks) {
    for (int64_t i = 0; i < b.count; ++i) {
      const int64_t id = b.ids[i];
      if (id < 0 || id >= table_rows) {
        reset();
        RT_THROW(Error, "sparse gradient row ", id, " outside the table's [0, ", table_rows, ")");
      }
      uint64_t& word = touched_[static_cast<size_t>(id >> 6)];
      const uint64_t bit = uint64_t{1} << (id & 63);
      marked_ += (word & bit) == 0 ? 1 : 0;
      word |= bit;
    }
  }
  return marked_;
}

namespace {
// The owner of row id among `world` ranks (id % world; ownerOfRow in sparse_sync.h), with the division left
// out when world is a power of two: it runs once per summed row.
class OwnerOf {
 public:
  explicit OwnerOf(int world)
      : world_(world), mask_((world & (world - 1)) == 0 ? static_cast<uint64_t>(world - 1) : 0),
        power_of_two_((world & (world - 1)) == 0) {}
  int operator()(int64_t id) const {
    return power_of_two_ ? static_cast<int>(static_cast<uint64_t>(id) & mask_) : static_cast<int>(id % world_);
  }

 private:
  int64_t world_;
  uint64_t mask_;
  bool power_of_two_;
};
}  // namespace

void RowSummer::ownerCounts(int world, int64_t* counts) const {
  RT_CHECK_GE(world, 1, "RowSummer: a world of ", world, " ranks");
  const OwnerOf owner(world);
  std::fill(counts, counts + world, 0);
  int64_t total = 0;
  for (size_t w = 0; w < touched_.size(); ++w) {
    for (uint64_t bits = touched_[w]; bits != 0; bits &= bits - 1) {
      ++counts[owner(static_cast<int64_t>(w) * 64 + __builtin_ctzll(bits))];
      ++total;
    }
  }
  // A mark left behind would size the owners' messages for rows sumByOwner() never writes.
  RT_CHECK_EQ(total, marked_, "RowSummer: rows marked before this call's mark()");
}

template <typename T>
void RowSummer::sum(const std::vector<RowBlock>& blocks, int64_t width, int64_t* ids_out, T* values_out) {
  sumByOwner<T>(blocks, width, 1, &ids_out, &values_out);
}

template <typename T>
void RowSummer::sumByOwner(const std::vector<RowBlock>& blocks, int64_t width, int world, int64_t* const* ids_out,
                           T* const* values_out) {
  RT_CHECK_GE(world, 1, "RowSummer: a world of ", world, " ranks");
  const OwnerOf owner(world);
  next_.assign(static_cast<size_t>(world), 0);
  // The touched bits, scanned in order, give the distinct ids ascending. A bit stays set until its id's
  // first row is copied (later rows add), so no output row is zeroed first and the bits end cleared.
  int64_t written = 0;
  const size_t words = touched_.size();
  for (size_t w = 0; w < words && written < marked_; ++w) {
    uint64_t bits = touched_[w];
    while (bits != 0) {
      const int64_t id = static_cast<int64_t>(w) * 64 + __builtin_ctzll(bits);
      bits &= bits - 1;
      // More bits than mark() counted would write past the caller's output: a mark left behind.
      RT_CHECK_LT(written, marked_, "RowSummer: row ", id, " was marked before this call's mark()");
      const int o = owner(id);
      int64_t& next = next_[static_cast<size_t>(o)];
      slot_[static_cast<size_t>(id)] = static_cast<int32_t>(next);
      ids_out[o][next++] = id;
      ++written;
    }
  }
  for (const RowBlock& b : blocks) {
    const T* in = static_cast<const T*>(b.values);
    for (int64_t i = 0; i < b.count; ++i) {
      if (i + ::ringtrain::detail::kRowsAhead < b.count) {  // the output rows land in id order, not input order
        const int64_t ahead = b.ids[i + ::ringtrain::detail::kRowsAhead];
        ::ringtrain::detail::prefetchRow<true>(values_out[owner(ahead)], slot_[static_cast<size_t>(ahead)], width);
      }
      const int64_t id = b.ids[i];
      T* dst = values_out[owner(id)] + static_cast<int64_t>(slot_[static_cast<size_t>(id)]) * width;
      const T* row = in + i * width;
      uint64_t& word = touched_[static_cast<size_t>(id >> 6)];
      const uint64_t bit = uint64_t{1} << (id & 63);
      if ((word & bit) != 0) {
        word &= ~bit;
        std::copy(row, row + width, dst);
      } else {
        for (int64_t j = 0; j < width; ++j) dst[j] += row[j];
      }
    }
  }
  marked_ = 0;
}

namespace {
// The smallest id at the blocks' heads (head[b]: the next row of block b), INT64_MAX once all are used up.
int64_t lowestHead(const std::vector<RowBlock>& blocks, const std::vector<int64_t>& head) {
  int64_t low = INT64_MAX;
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (head[b] < blocks[b].count) low = std::min(low, blocks[b].ids[head[b]]);
  }
  return low;
}
}  // namespace

void checkExchangedRows(const RowBlock& block, int64_t table_rows, size_t table, int rank) {
  for (int64_t i = 0; i < block.count; ++i) {
    const int64_t id = block.ids[i];
    RT_CHECK(id >= 0 && id < table_rows, "sparse rows message from rank ", rank, ": row ", id, " of table ", table,
             " outside the table's [0, ", table_rows, ")");
    RT_CHECK(i == 0 || block.ids[i - 1] < id, "sparse rows message from rank ", rank, ": the rows of table ", table,
             " are not ascending and distinct at position ", i, " (row ", id, ")");
  }
}

int64_t countMerged(const std::vector<RowBlock>& blocks, int64_t table_rows) {
  for (size_t b = 0; b < blocks.size(); ++b) {
    const RowBlock& block = blocks[b];
    for (int64_t i = 0; i < block.count; ++i) {
      const int64_t id = block.ids[i];
      RT_CHECK(id >= 0 && id < table_rows, "sparse rows of block ", b, ": row ", id, " outside the table's [0, ",
               table_rows, ")");
      RT_CHECK(i == 0 || block.ids[i - 1] < id, "sparse rows of block ", b, " are not ascending at position ", i);
    }
  }
  std::vector<int64_t> head(blocks.size(), 0);
  int64_t distinct = 0;
  while (true) {
    const int64_t low = lowestHead(blocks, head);
    if (low == INT64_MAX) return distinct;
    ++distinct;
    for (size_t b = 0; b < blocks.size(); ++b) {
      if (head[b] < blocks[b].count && blocks[b].ids[head[b]] == low) ++head[b];
    }
  }
}

template <typename T>
ExactDivider<T>::ExactDivider(T divisor) : divisor_(divisor), reciprocal_(T(1) / divisor) {
  int exponent = 0;
  // A normal reciprocal: 1 / 2^k overflows or goes subnormal (flushed to zero in some modes) at the ends.
  multiply_ = divisor > T(0) && std::frexp(divisor, &exponent) == T(0.5) && std::isnormal(reciprocal_);
}

template <typename T>
void ExactDivider<T>::apply(T* values, int64_t count) const {
  if (divisor_ == T(1)) return;
  if (multiply_) {
    for (int64_t j = 0; j < count; ++j) values[j] *= reciprocal_;
  } else {
    for (int64_t j = 0; j < count; ++j) values[j] /= divisor_;
  }
}

template <typename T>
void sumMerged(const std::vector<RowBlock>& blocks, int64_t width, T divisor, int64_t* ids_out, T* values_out) {
  const ExactDivider<T> divide(divisor);
  std::vector<int64_t> head(blocks.size(), 0);
  for (int64_t out = 0;; ++out) {
    const int64_t low = lowestHead(blocks, head);
    if (low == INT64_MAX) return;
    ids_out[out] = low;
    T* dst = values_out + out * width;
    bool first = true;
    for (size_t b = 0; b < blocks.size(); ++b) {
      if (head[b] >= blocks[b].count || blocks[b].ids[head[b]] != low) continue;
      const T* row = static_cast<const T*>(blocks[b].values) + head[b] * width;
      ++head[b];
      if (first) {
        std::copy(row, row + width, dst);
        first = false;
      } else {
        for (int64_t j = 0; j < width; ++j) dst[j] += row[j];
      }
    }
    divide.apply(dst, width);
  }
}

void RowSummer::reset() {
  std::fill(touched_.begin(), touched_.end(), 0);
  marked_ = 0;
}

template void RowSummer::sum<float>(const std::vector<RowBlock>&, int64_t, int64_t*, float*);
template void RowSummer::sum<double>(const std::vector<RowBlock>&, int64_t, int64_t*, double*);
template void RowSummer::sumByOwner<float>(const std::vector<RowBlock>&, int64_t, int, int64_t* const*, float* const*);
template void RowSummer::sumByOwner<double>(const std::vector<RowBlock>&, int64_t, int, int64_t* const*,
                                            double* const*);
template class ExactDivider<float>;
template class ExactDivider<double>;
template void sumMerged<float>(const std::vector<RowBlock>&, int64_t, float, int64_t*, float*);
template void sumMerged<double>(const std::vector<RowBlock>&, int64_t, double, int64_t*, double*);

}  // namespace ringtrain::ddp::detail
