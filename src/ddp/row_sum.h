// Summing sparse rows by id: the arithmetic under the sparse-row sync (ddp/sparse_sync.h), apart from any
// communication, so it is tested on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ringtrain::ddp::detail {

// `count` rows of one table, borrowed: their ids and `count x width` values, row-major.
struct RowBlock {
  const int64_t* ids = nullptr;
  const void* values = nullptr;
  int64_t count = 0;
};

// Both ways below sum in two steps: one counts the distinct ids (so the caller can size the output), the
// next writes them ascending, each with the sum of its rows taken in block order and, within a block, in
// input order. Summing the same blocks in the same order therefore gives the same bits on every rank.

// Divides values by `divisor` (the world size, for an average), multiplying by the reciprocal where that
// gives the same bits: a power of two whose reciprocal is a normal number. A division's latency on every
// element was half of merging's time at 2 ranks.
template <typename T>  // float or double
class ExactDivider {
 public:
  explicit ExactDivider(T divisor);
  void apply(T* values, int64_t count) const;

 private:
  T divisor_;
  T reciprocal_;
  bool multiply_;
};

// What every rank sends of a table: rows ascending, distinct and inside [0, table_rows). Throws
// ringtrain::Error naming the sending rank, the table and the row otherwise.
void checkExchangedRows(const RowBlock& block, int64_t table_rows, size_t table, int rank);

// Blocks whose ids are each ascending and distinct (what ranks exchange), merged in one pass: each output
// row is written once, already divided by `divisor`. Throws ringtrain::Error naming the block when its ids
// are not ascending or fall outside [0, table_rows).
int64_t countMerged(const std::vector<RowBlock>& blocks, int64_t table_rows);
template <typename T>  // float or double
void sumMerged(const std::vector<RowBlock>& blocks, int64_t width, T divisor, int64_t* ids_out, T* values_out);

// Blocks in any order, duplicates allowed (a rank's own gradient rows, or every rank's exchanged blocks of
// a table not much larger than what arrived: at 100k rows it sums them in half of merging's time at 8
// ranks), summed without sorting. It keeps,
// between calls, a bit per table row ("touched") and a slot per table row (where that row's sum goes), 4.1
// bytes per table row: a call costs the rows summed plus a scan of table_rows / 64 words, and allocates
// nothing once the table is known.
class RowSummer {
 public:
  // Tables above this many rows are summed another way (the scratch would outweigh its use).
  static constexpr int64_t kMaxTableRows = int64_t{1} << 25;

  // Throws ringtrain::Error (leaving nothing marked) on an id outside [0, table_rows) or a table that is
  // too large.
  int64_t mark(const std::vector<RowBlock>& blocks, int64_t table_rows);
  // T is float or double. Writes ids_out[distinct] and values_out[distinct x width]; clears the marks.
  template <typename T>
  void sum(const std::vector<RowBlock>& blocks, int64_t width, int64_t* ids_out, T* values_out);
  // sum() with its output split by owner, row id going to owner id % world: after mark(), ownerCounts()
  // gives each owner's number of distinct ids (counts[world]); sumByOwner() writes owner o's ids ascending
  // at ids_out[o] and their sums at values_out[o], in the same order of additions as sum(). It lets a rank
  // sum its rows straight into the messages to their owners.
  void ownerCounts(int world, int64_t* counts) const;
  template <typename T>
  void sumByOwner(const std::vector<RowBlock>& blocks, int64_t width, int world, int64_t* const* ids_out,
                  T* const* values_out);
  // Drops the marks of a mark() whose sum() will not come (an error between the two).
  void reset();

 private:
  std::vector<uint64_t> touched_;  // bit id % 64 of word id / 64
  std::vector<int32_t> slot_;      // output position of each touched id (within its owner), valid during sum()
  std::vector<int64_t> next_;      // per owner, the next output position, during sumByOwner()
  int64_t marked_ = 0;             // distinct ids of the last mark()
};

}  // namespace ringtrain::ddp::detail
