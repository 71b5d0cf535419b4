#include "ringtrain/ddp/sparse_sync.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ddp/ordered_jobs.h"
#include "ddp/row_sum.h"
#include "ddp/sparse_sync_device.h"
#include "ddp/table_rows.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::ddp {
namespace {

constexpr size_t kHeaderBytes = 2 * sizeof(int64_t);  // a block's [count][width]

// Blocks are padded to 8 bytes, so that in a message (malloc-aligned) every block's ids and values are
// aligned for int64, float and double.
size_t padded(size_t bytes) { return (bytes + 7) & ~size_t{7}; }

// A block's padded length: header, `count` ids and `count` rows of `row_bytes` values.
size_t blockLength(int64_t count, size_t row_bytes) {
  return padded(kHeaderBytes + static_cast<size_t>(count) * (sizeof(int64_t) + row_bytes));
}

void writeHeader(uint8_t* dst, int64_t count, int64_t width) {
  std::memcpy(dst, &count, sizeof(int64_t));
  std::memcpy(dst + sizeof(int64_t), &width, sizeof(int64_t));
}

using detail::rowWidth;

// A rank's rows of one table, on the host (a GPU gradient is coalesced there first; host duplicates are left
// to RowSummer, which sums them faster than coalesce()), as the RowBlock the summing reads.
detail::TableRows sourceRows(const at::Tensor& param, const at::Tensor& grad) {
  return detail::tableRows(param, grad, at::kCPU, /*coalesce=*/false);
}
detail::RowBlock blockOf(const detail::TableRows& rows) {
  return {rows.ids.data_ptr<int64_t>(), rows.values.data_ptr(), rows.ids.numel()};
}

// Sums duplicate rows by sorting: for what RowSummer does not take (dtypes other than float and double,
// tables of more than RowSummer::kMaxTableRows rows). Equal ids add in input order (a stable sort).
std::pair<at::Tensor, at::Tensor> sumBySorting(const at::Tensor& rows, const at::Tensor& values) {
  if (values.scalar_type() != at::kFloat && values.scalar_type() != at::kDouble) {
    at::Tensor summed = at::sparse_coo_tensor(rows.unsqueeze(0), values).coalesce();
    return {summed.indices().select(0, 0).contiguous(), summed.values().contiguous()};
  }
  const int64_t n = rows.numel();
  const int64_t* ids = rows.data_ptr<int64_t>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [ids](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  std::vector<int64_t> slot(static_cast<size_t>(n));
  int64_t unique = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0 && ids[order[i]] != ids[order[i - 1]]) ++unique;
    slot[static_cast<size_t>(order[i])] = unique;
  }
  unique = n > 0 ? unique + 1 : 0;
  at::Tensor out_rows = at::empty({unique}, at::kLong);
  for (int64_t i = 0; i < n; ++i) out_rows.data_ptr<int64_t>()[slot[static_cast<size_t>(order[i])]] = ids[order[i]];
  at::Tensor out_values = at::zeros({unique, values.size(1)}, values.options());
  out_values.index_add_(0, at::from_blob(slot.data(), {n}, at::kLong), values);
  return {out_rows, out_values};
}

// One table's rows summed by id, in two steps so that the caller can place the result: distinct() says how
// many rows there are, write() writes them (ids ascending, values divided by `world`). Float and double
// rows go through the table's RowSummer: a rank's own (any order, duplicates), and the blocks ranks
// exchanged (each ascending and distinct, checked by readBlock) unless the table is so much larger than
// what arrived that merging them is cheaper. Other dtypes, and a rank's own rows of tables too large for a
// RowSummer, are sorted.
//
// A RowSummer's cost follows the rows summed plus the table (a bitmap scan, slots scattered over a
// table-sized array); merging's follows the rows received times the ranks. bench/row_sum_bench --table
// puts the crossing at about a hundred table rows per row received and rank (2 ranks: even at 1M rows,
// 4,500 received; 8 ranks: even at about 4M); the summer is kept up to 64.
constexpr int64_t kSummerTableRowsPerReceivedRow = 64;

class TableSum {
 public:
  enum class Input { kOwnRows, kExchanged };

  TableSum(const at::Tensor& param, std::vector<detail::RowBlock> blocks, Input input, detail::RowSummer& summer)
      : width_(rowWidth(param)), dtype_(param.scalar_type()), blocks_(std::move(blocks)), summer_(summer) {
    const bool typed = dtype_ == at::kFloat || dtype_ == at::kDouble;
    int64_t received = 0;
    for (const auto& b : blocks_) received += b.count;
    const bool summer_pays = input == Input::kOwnRows || param.size(0) <= kSummerTableRowsPerReceivedRow *
                                                                             static_cast<int64_t>(blocks_.size()) *
                                                                             received;
    if (typed && param.size(0) <= detail::RowSummer::kMaxTableRows && summer_pays) {
      way_ = Way::kSummer;
      distinct_ = summer_.mark(blocks_, param.size(0));
    } else if (typed && input == Input::kExchanged) {
      way_ = Way::kMerge;
      distinct_ = detail::countMerged(blocks_, param.size(0));
    } else {
      way_ = Way::kSort;
      std::vector<at::Tensor> rows = {at::empty({0}, at::kLong)};  // at::cat needs one input of each shape
      std::vector<at::Tensor> values = {at::empty({0, width_}, at::TensorOptions(dtype_))};
      for (const auto& b : blocks_) {
        for (int64_t i = 0; i < b.count; ++i) {
          RT_CHECK(b.ids[i] >= 0 && b.ids[i] < param.size(0), "sparse gradient row ", b.ids[i],
                   " outside the table's [0, ", param.size(0), ")");
        }
        rows.push_back(at::from_blob(const_cast<int64_t*>(b.ids), {b.count}, at::kLong));
        values.push_back(at::from_blob(const_cast<void*>(b.values), {b.count, width_}, at::TensorOptions(dtype_)));
      }
      std::tie(rows_, values_) = sumBySorting(at::cat(rows), at::cat(values));
      distinct_ = rows_.numel();
    }
  }
  ~TableSum() {
    if (way_ == Way::kSummer && !written_) summer_.reset();
  }
  TableSum(const TableSum&) = delete;
  TableSum& operator=(const TableSum&) = delete;

  int64_t distinct() const { return distinct_; }
  int64_t width() const { return width_; }
  size_t rowBytes() const { return static_cast<size_t>(width_) * c10::elementSize(dtype_); }

  void write(int world, int64_t* ids_out, void* values_out) {
    RT_CHECK(!written_, "TableSum written twice");
    writeOnce(world, ids_out, values_out);
    written_ = true;  // only now: a RowSummer that failed mid-sum is reset by the destructor
  }

  // A rank's own rows split by owner (row % world), undivided: each owner's count of distinct rows, then the
  // rows written ascending into each owner's outputs, as write(1, ...) would write them all in one.
  std::vector<int64_t> ownerCounts(int world) const {
    std::vector<int64_t> counts(static_cast<size_t>(world), 0);
    if (way_ == Way::kSummer) {
      summer_.ownerCounts(world, counts.data());
    } else {
      RT_CHECK(way_ == Way::kSort, "TableSum: only a rank's own rows are split by owner");
      const int64_t* ids = rows_.data_ptr<int64_t>();
      for (int64_t i = 0; i < distinct_; ++i) ++counts[static_cast<size_t>(ownerOfRow(ids[i], world))];
    }
    return counts;
  }
  void writeByOwner(int world, const std::vector<int64_t*>& ids_out, const std::vector<uint8_t*>& values_out) {
    RT_CHECK(!written_, "TableSum written twice");
    if (way_ == Way::kSummer && dtype_ == at::kFloat) {
      sumByOwner<float>(world, ids_out, values_out);
    } else if (way_ == Way::kSummer) {
      sumByOwner<double>(world, ids_out, values_out);
    } else {
      RT_CHECK(way_ == Way::kSort, "TableSum: only a rank's own rows are split by owner");
      std::vector<int64_t> next(static_cast<size_t>(world), 0);
      const int64_t* ids = rows_.data_ptr<int64_t>();
      const auto* from = static_cast<const uint8_t*>(values_.data_ptr());
      for (int64_t i = 0; i < distinct_; ++i) {
        const auto o = static_cast<size_t>(ownerOfRow(ids[i], world));
        ids_out[o][next[o]] = ids[i];
        std::memcpy(values_out[o] + next[o] * rowBytes(), from + i * rowBytes(), rowBytes());
        ++next[o];
      }
    }
    written_ = true;
  }

 private:
  void writeOnce(int world, int64_t* ids_out, void* values_out) {
    const bool single = dtype_ == at::kFloat;
    switch (way_) {
      case Way::kMerge:
        if (single) {
          detail::sumMerged<float>(blocks_, width_, static_cast<float>(world), ids_out, static_cast<float*>(values_out));
        } else {
          detail::sumMerged<double>(blocks_, width_, world, ids_out, static_cast<double*>(values_out));
        }
        return;
      case Way::kSummer:
        // The same additions as merging, then the same division.
        if (single) {
          summer_.sum<float>(blocks_, width_, ids_out, static_cast<float*>(values_out));
          detail::ExactDivider<float>(static_cast<float>(world))
              .apply(static_cast<float*>(values_out), distinct_ * width_);
        } else {
          summer_.sum<double>(blocks_, width_, ids_out, static_cast<double*>(values_out));
          detail::ExactDivider<double>(world).apply(static_cast<double*>(values_out), distinct_ * width_);
        }
        return;
      case Way::kSort: {
        const at::Tensor values = world > 1 ? values_.div(static_cast<double>(world)) : values_;
        std::memcpy(ids_out, rows_.data_ptr<int64_t>(), static_cast<size_t>(distinct_) * sizeof(int64_t));
        std::memcpy(values_out, values.data_ptr(), static_cast<size_t>(distinct_) * rowBytes());
        return;
      }
    }
  }

  template <typename T>
  void sumByOwner(int world, const std::vector<int64_t*>& ids_out, const std::vector<uint8_t*>& values_out) {
    std::vector<T*> values(values_out.size());
    for (size_t o = 0; o < values.size(); ++o) values[o] = reinterpret_cast<T*>(values_out[o]);
    summer_.sumByOwner<T>(blocks_, width_, world, ids_out.data(), values.data());
  }

  enum class Way { kMerge, kSummer, kSort };
  int64_t width_;
  c10::ScalarType dtype_;
  std::vector<detail::RowBlock> blocks_;
  detail::RowSummer& summer_;
  Way way_ = Way::kSort;
  bool written_ = false;
  int64_t distinct_ = 0;
  at::Tensor rows_, values_;  // the sorting way's result
};

size_t blockBytes(const TableSum& sum) { return blockLength(sum.distinct(), sum.rowBytes()); }

// Writes the table's summed rows as one block at `dst` (blockBytes(sum) long; partial sums travel undivided).
void writeBlock(uint8_t* dst, TableSum& sum) {
  const int64_t count = sum.distinct();
  writeHeader(dst, count, sum.width());
  sum.write(1, reinterpret_cast<int64_t*>(dst + kHeaderBytes), dst + kHeaderBytes + count * sizeof(int64_t));
}

// The averaged, coalesced sparse gradient of the table; its rows count into counts.rows_global.
at::Tensor summedGradient(const at::Tensor& param, TableSum& sum, int world, SparseSyncCounts& counts) {
  std::vector<int64_t> shape(param.sizes().begin(), param.sizes().end());
  shape[0] = sum.distinct();
  at::Tensor rows = at::empty({sum.distinct()}, at::kLong);
  at::Tensor values = at::empty(shape, param.options().device(at::kCPU));
  sum.write(world, rows.data_ptr<int64_t>(), values.data_ptr());
  at::Tensor result = at::sparse_coo_tensor(rows.unsqueeze(0), values, param.sizes());
  result._coalesced_(true);
  counts.rows_global += static_cast<size_t>(sum.distinct());
  return result.to(param.device());
}

// Reads the block at `bytes` (from `rank`, for table `table` of `table_rows` rows of width `width` and element
// size `element`) into `block`; returns its padded length. Throws when it is malformed or does not fit the
// table.
size_t readBlock(const uint8_t* bytes, size_t size, int64_t width, size_t element, int64_t table_rows, size_t table,
                 int rank, detail::RowBlock& block) {
  RT_CHECK_GE(size, kHeaderBytes, "sparse rows message from rank ", rank, " is too short");
  int64_t count = 0, sent_width = 0;
  std::memcpy(&count, bytes, sizeof(int64_t));
  std::memcpy(&sent_width, bytes + sizeof(int64_t), sizeof(int64_t));
  RT_CHECK(count >= 0, "sparse rows message from rank ", rank, " has a negative count");
  const size_t row_bytes = static_cast<size_t>(width) * element;
  RT_CHECK_LE(static_cast<size_t>(count), (size - kHeaderBytes) / (sizeof(int64_t) + row_bytes),
              "sparse rows message from rank ", rank, " claims ", count, " rows, more than its ", size, " bytes hold");
  RT_CHECK(count == 0 || sent_width == width, "sparse rows message from rank ", rank, " has rows of width ",
           sent_width, " for a table of width ", width);
  const size_t length = blockLength(count, row_bytes);
  RT_CHECK_LE(length, size, "sparse rows message from rank ", rank, " is shorter than its header says");
  block.ids = reinterpret_cast<const int64_t*>(bytes + kHeaderBytes);
  block.values = bytes + kHeaderBytes + count * sizeof(int64_t);
  block.count = count;
  // Checked here, once, so that every way of summing may rely on it, and a sender's bug names the sender.
  detail::checkExchangedRows(block, table_rows, table, rank);
  return length;
}

// Splits each rank's message into its tables' blocks: out[t][r] is rank r's block of table t.
std::vector<std::vector<detail::RowBlock>> splitMessages(const std::vector<at::Tensor>& params,
                                                         const std::vector<const std::vector<uint8_t>*>& messages) {
  std::vector<std::vector<detail::RowBlock>> out(params.size(),
                                                  std::vector<detail::RowBlock>(messages.size()));
  for (size_t r = 0; r < messages.size(); ++r) {
    const std::vector<uint8_t>& m = *messages[r];
    size_t offset = 0;
    for (size_t t = 0; t < params.size(); ++t) {
      offset += readBlock(m.data() + offset, m.size() - offset, rowWidth(params[t]),
                          c10::elementSize(params[t].scalar_type()), params[t].size(0), t, static_cast<int>(r),
                          out[t][r]);
    }
    RT_CHECK_EQ(offset, m.size(), "sparse rows message from rank ", r, " has the wrong length");
  }
  return out;
}

// Runs one byte exchange (`run(exchange)`), its time added to counts. After a failure (a timeout above all)
// the communication thread may still read the exchange: it is replaced, so that a later call gets a new one.
template <typename Exchange, typename Run>
void timedExchange(std::shared_ptr<Exchange>& exchange, const Run& run, SparseSyncCounts& counts) {
  const auto start = std::chrono::steady_clock::now();
  try {
    run(exchange);
  } catch (...) {
    exchange = std::make_shared<Exchange>();
    throw;
  }
  counts.exchange_time += std::chrono::steady_clock::now() - start;
}

// Owner and shared modes' scratch, kept from step to step: the messages are reused, grown, not refilled.
struct OwnerScratch {
  // What goes to each owner and what came from each rank; replaced after a failed exchange, which the
  // communication thread may still be reading.
  std::shared_ptr<comm::AllToAllExchange> exchange = std::make_shared<comm::AllToAllExchange>();
  // This step's messages so far: tables 0..tables-1 are written, owner o's message up to used[o].
  std::vector<size_t> used;
  size_t tables = 0;
  size_t rows_local = 0;  // distinct rows of the tables written

  void restart(int world) {
    used.assign(static_cast<size_t>(world), 0);
    tables = 0;
    rows_local = 0;
  }
};

// Appends table `table`'s block to every owner's message: this rank's rows of the table summed by id, owner
// o's share (rows r with r % world == o) ascending. Tables are appended in order, by sync() or, while
// backward runs, by the helper thread (SparseRowSync::prepare).
void appendOwnRows(int world, size_t table, const at::Tensor& param, const detail::TableRows& rows,
                   detail::RowSummer& summer, OwnerScratch& scratch) {
  if (table == 0) scratch.restart(world);
  RT_CHECK_EQ(scratch.tables, table, "sparse rows: tables must reach the owners' messages in order");
  TableSum own(param, std::vector{blockOf(rows)}, TableSum::Input::kOwnRows, summer);
  const std::vector<int64_t> shares = own.ownerCounts(world);
  std::vector<std::vector<uint8_t>>& send = scratch.exchange->send;
  send.resize(static_cast<size_t>(world));
  std::vector<int64_t*> ids(world);
  std::vector<uint8_t*> values(world);
  std::vector<size_t> block_at(world);
  for (int o = 0; o < world; ++o) {
    block_at[o] = scratch.used[o];
    scratch.used[o] += blockLength(shares[o], own.rowBytes());
    // Grown, never cleared: only bytes beyond the longest message so far get zeroed.
    if (send[o].size() < scratch.used[o]) send[o].resize(scratch.used[o]);
  }
  for (int o = 0; o < world; ++o) {  // after every resize: the pointers stay valid
    uint8_t* block = send[o].data() + block_at[o];
    writeHeader(block, shares[o], own.width());
    ids[o] = reinterpret_cast<int64_t*>(block + kHeaderBytes);
    values[o] = block + kHeaderBytes + shares[o] * sizeof(int64_t);
  }
  own.writeByOwner(world, ids, values);
  scratch.rows_local += static_cast<size_t>(own.distinct());
  ++scratch.tables;
}

// Owner and shared modes: this rank's rows of every table, summed by id, go to their owners (row r to rank
// r % world) in one exchange, each owner's message holding a block per table; result[t] sums, over ranks in
// rank order, the rows of table t this rank owns. The tables the helper has not appended yet are appended
// here first. The results read the scratch's buffers: keep it untouched until they are written.
std::vector<std::unique_ptr<TableSum>> reduceAtOwners(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                                      const std::vector<at::Tensor>& grads,
                                                      std::vector<detail::RowSummer>& summers, OwnerScratch& scratch,
                                                      SparseSyncCounts& counts) {
  const int world = comm.size();
  const int me = comm.rank();
  for (size_t t = scratch.tables; t < params.size(); ++t) {
    appendOwnRows(world, t, params[t], sourceRows(params[t], grads[t]), summers[t], scratch);
  }
  if (params.empty()) scratch.restart(world);
  counts.rows_local += scratch.rows_local;
  comm::AllToAllExchange& ex = *scratch.exchange;
  ex.send.resize(static_cast<size_t>(world));
  for (int o = 0; o < world; ++o) {
    ex.send[o].resize(scratch.used[o]);  // shrinking frees nothing: next step's growth reuses it
    if (o != me) counts.bytes_sent += scratch.used[o];
  }
  timedExchange(scratch.exchange, [&](const auto& exchange) { comm.allToAllBytesInto(exchange); }, counts);
  RT_CHECK_EQ(ex.received.size(), static_cast<size_t>(world), "allToAllBytesInto: one message per rank");
  std::vector<const std::vector<uint8_t>*> messages;
  for (int r = 0; r < world; ++r) {
    if (r != me) counts.bytes_received += ex.received[r].size();
    messages.push_back(r == me ? &ex.send[r] : &ex.received[r]);
  }
  const auto blocks = splitMessages(params, messages);
  std::vector<std::unique_ptr<TableSum>> sums;
  for (size_t t = 0; t < params.size(); ++t) {
    sums.push_back(std::make_unique<TableSum>(params[t], blocks[t], TableSum::Input::kExchanged, summers[t]));
  }
  return sums;
}

}  // namespace

struct SparseRowSync::State {
  std::vector<detail::RowSummer> summers;  // one per table
  std::shared_ptr<comm::ByteExchange> exchange = std::make_shared<comm::ByteExchange>();
  OwnerScratch to_owners;  // owner and shared modes
  bool said_owner_unused = false;  // the device path all-gathers whatever the mode: said once
  // prepare(): per table the gradient it was given this step and that gradient's version then (sync() uses
  // the helper's work only for the same tensor, unchanged; holding it keeps its address from being reused).
  struct Prepared {
    at::Tensor grad;
    int64_t version = 0;
  };
  std::vector<Prepared> prepared;
  std::chrono::nanoseconds helper_time{0};  // this step's, on the helper thread
  // Started by the first prepare(); declared last, so that it is joined before what its jobs write
  // (summers, to_owners, helper_time, read only after OrderedJobs::close()) goes.
  std::unique_ptr<detail::OrderedJobs> helper;
};

// Alone, this class cannot know whether the tables are shared: auto is allgather here (DistributedDataParallel
// settles auto before it makes one).
SparseRowSync::SparseRowSync(SparseSync mode)
    : mode_(mode == SparseSync::kAuto ? SparseSync::kAllgather : mode), state_(std::make_unique<State>()) {}
SparseRowSync::~SparseRowSync() = default;

bool SparseRowSync::prepare(comm::Communicator& comm, const std::vector<at::Tensor>& params, size_t index,
                            const at::Tensor& grad) {
  const bool to_owners = mode_ == SparseSync::kOwner || mode_ == SparseSync::kShared;
  RT_CHECK_LT(index, params.size(), "SparseRowSync::prepare: table index out of range");
  // A dense or GPU gradient is left to sync(): the first may still be added to in place, the second would
  // need its stream on the helper thread.
  if (!to_owners || comm.size() == 1 || !grad.defined() || !grad.is_sparse() || !grad.is_cpu() ||
      detail::sparseSyncOnDevice(comm, params)) {
    return false;
  }
  State& s = *state_;
  if (!s.helper) {  // nothing runs yet: the per-table state may be sized
    s.summers.resize(params.size());
    s.prepared.assign(params.size(), {});
    s.helper = std::make_unique<detail::OrderedJobs>();
  }
  RT_CHECK_EQ(s.summers.size(), params.size(), "SparseRowSync: call it with the same parameters every time");
  // Views of this gradient's indices and values, taken here: accumulating into a sparse gradient (another
  // backward) gives it new tensors instead of writing into these, and bumps its version.
  detail::TableRows rows = sourceRows(params[index], grad);
  const int world = comm.size();
  const std::thread::id caller = std::this_thread::get_id();
  s.helper->give(index, params.size(), [&s, world, index, caller, param = params[index], rows = std::move(rows)] {
    at::init_num_threads();  // the sorting way's ATen ops use the job's thread count, not the machine's
    const auto start = std::chrono::steady_clock::now();
    appendOwnRows(world, index, param, rows, s.summers[index], s.to_owners);
    // OrderedJobs::close() runs the jobs the helper did not reach on the caller's thread: not overlapped.
    if (std::this_thread::get_id() != caller) s.helper_time += std::chrono::steady_clock::now() - start;
  });
  // Recorded once the job is taken: a refused second gradient must not replace the one sync() checks.
  s.prepared[index] = {grad, grad._version()};
  return true;
}

std::vector<at::Tensor> SparseRowSync::sync(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                            const std::vector<at::Tensor>& grads, SparseSyncCounts& counts) {
  RT_CHECK_EQ(params.size(), grads.size(), "SparseRowSync: one gradient per parameter");
  // CUDA tables over NCCL stay on their device.
  if (detail::sparseSyncOnDevice(comm, params)) {
    if (mode_ != SparseSync::kAllgather && !state_->said_owner_unused) {
      warn("ddp.sparse_sync: {} applies to rows exchanged through the host; CUDA tables over NCCL are "
           "all-gathered on the device", toString(mode_));
      state_->said_owner_unused = true;
    }
    return detail::syncSparseRowsOnDevice(comm, params, grads, counts);
  }
  using Input = TableSum::Input;
  const int world = comm.size();
  const int me = comm.rank();
  State& s = *state_;
  // The tables prepare() handed over, summed into the owners' messages in order.
  size_t prepared = 0;
  if (s.helper) {
    struct Forget {  // whatever happens below, this step's gradients are not held into the next
      State& s;
      ~Forget() { std::fill(s.prepared.begin(), s.prepared.end(), State::Prepared{}); }
    } forget{s};
    prepared = s.helper->close();  // rethrows a job's error
    counts.overlapped_time += std::exchange(s.helper_time, std::chrono::nanoseconds{0});
    for (size_t t = 0; t < prepared; ++t) {
      // A gradient replaced or changed after it was ready (another backward, the user): sum every table
      // again, from what sync() is given.
      const State::Prepared& p = s.prepared[t];
      if (!p.grad.is_same(grads[t]) || p.grad._version() != p.version) prepared = 0;
    }
  }
  if (prepared == 0) s.to_owners.tables = 0;
  counts.tables_overlapped += prepared;
  s.summers.resize(params.size());
  std::vector<at::Tensor> results;
  if (world == 1) {
    for (size_t t = 0; t < params.size(); ++t) {
      const detail::TableRows source = sourceRows(params[t], grads[t]);
      TableSum sum(params[t], {blockOf(source)}, Input::kOwnRows, s.summers[t]);
      counts.rows_local += static_cast<size_t>(sum.distinct());
      results.push_back(summedGradient(params[t], sum, 1, counts));
    }
    return results;
  }

  // Shared tables: the rows this rank owns, summed over ranks, are all it needs; its optimizer writes them
  // into the one copy of the table every rank reads.
  if (mode_ == SparseSync::kShared) {
    auto sums = reduceAtOwners(comm, params, grads, s.summers, s.to_owners, counts);
    for (size_t t = 0; t < params.size(); ++t) {
      results.push_back(summedGradient(params[t], *sums[t], world, counts));
    }
    return results;
  }

  // What this rank contributes to the final gather, every table in one message: its own rows summed
  // (allgather), or the rows it owns summed over ranks (owner).
  std::vector<std::unique_ptr<TableSum>> contribution;
  std::vector<detail::TableRows> sources;  // what the allgather contribution reads
  if (mode_ == SparseSync::kAllgather) {
    for (size_t t = 0; t < params.size(); ++t) {
      sources.push_back(sourceRows(params[t], grads[t]));
      contribution.push_back(
          std::make_unique<TableSum>(params[t], std::vector{blockOf(sources[t])}, Input::kOwnRows, s.summers[t]));
      counts.rows_local += static_cast<size_t>(contribution.back()->distinct());
    }
  } else {
    contribution = reduceAtOwners(comm, params, grads, s.summers, s.to_owners, counts);
  }
  std::vector<uint8_t>& mine = s.exchange->mine;
  size_t length = 0;
  for (const auto& sum : contribution) length += blockBytes(*sum);
  mine.resize(length);  // no clear(): only bytes beyond last step's length get zeroed
  size_t offset = 0;
  for (const auto& sum : contribution) {
    writeBlock(mine.data() + offset, *sum);
    offset += blockBytes(*sum);
  }
  contribution.clear();

  timedExchange(s.exchange, [&](const auto& exchange) { comm.allgatherBytesInto(exchange); }, counts);
  const std::vector<std::vector<uint8_t>>& all = s.exchange->all;
  RT_CHECK_EQ(all.size(), static_cast<size_t>(world), "allgatherBytesInto: one message per rank");
  std::vector<const std::vector<uint8_t>*> messages;
  for (int r = 0; r < world; ++r) {
    messages.push_back(r == me ? &mine : &all[r]);
    if (r != me) counts.bytes_received += all[r].size();
  }
  counts.bytes_sent += mine.size() * static_cast<size_t>(world - 1);
  const auto blocks = splitMessages(params, messages);
  for (size_t t = 0; t < params.size(); ++t) {
    TableSum sum(params[t], blocks[t], Input::kExchanged, s.summers[t]);
    results.push_back(summedGradient(params[t], sum, world, counts));
  }
  return results;
}

std::vector<at::Tensor> syncSparseGradients(comm::Communicator& comm, const std::vector<at::Tensor>& params,
                                            const std::vector<at::Tensor>& grads, SparseSync mode,
                                            SparseSyncCounts& counts) {
  RT_CHECK(mode != SparseSync::kShared, "syncSparseGradients: shared returns only the rows this rank owns, the "
           "whole update only for tables DistributedDataParallel shared; use it through DistributedDataParallel");
  return SparseRowSync(mode).sync(comm, params, grads, counts);
}

at::Tensor syncSparseGradient(comm::Communicator& comm, const at::Tensor& param, const at::Tensor& grad,
                              SparseSync mode, SparseSyncCounts& counts) {
  return syncSparseGradients(comm, {param}, {grad}, mode, counts).front();
}

}  // namespace ringtrain::ddp
