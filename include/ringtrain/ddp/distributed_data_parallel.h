// ringtrain::ddp::DistributedDataParallel: data-parallel training of one LibTorch module on N ranks.
//
//   ringtrain::comm::JobGroup job;                               // the job's store and communicator
//   ringtrain::ddp::DistributedDataParallel ddp(*model, job.comm());   // or with DdpOptions::fromConfig(...)
//   for (...) {
//     optimizer.zero_grad();            // or ddp.zeroGrad() (the only choice with shared sparse tables)
//     auto loss = computeLoss(model->forward(batch));
//     loss.backward();                  // dense buckets are allreduced WHILE backward runs
//     ddp.finalize();                   // waits for them, syncs sparse gradients: gradients are now READY
//     optimizer.step();
//   }
//
// WHEN GRADIENTS ARE READY: after finalize() returns, every parameter's .grad() holds the average over all
// ranks of that rank's local gradient, identical (bitwise, for the built-in allreduce hook) on every rank.
// Shared sparse tables (SparseSync::kShared) are the exception: there a table's .grad() holds only the rows
// this rank owns, the one table every rank maps is updated by its owners, and nothing may read it between
// the optimizer step and ddp.zeroGrad(), which waits for every owner (the replica check has nothing to
// compare for such a table).
// finalize() is explicit because LibTorch exposes no public end-of-backward callback: it waits for every
// dense bucket (launching, in order, those held back by unused parameters) and for rank 0's buffers
// (broadcast_buffers), then synchronizes sparse gradients, runs the replica check when due, and (once, after
// the first iteration) rebuilds the buckets.
// Every rank must call finalize() once per synchronized backward, the same number of times.
//
// HOW: construction broadcasts parameters and buffers from rank 0 after checking that every rank holds the
// same parameter names, shapes, dtypes and devices (a mismatch throws ringtrain::ConfigError naming the first
// differing parameter). Dense parameters are grouped into buckets (bucket_assignment.h); each bucket is one
// flat tensor and each parameter's .grad() is a view into it, so autograd accumulates straight into the
// communication buffer. An autograd post-hook on each parameter's gradient accumulator marks it ready; a
// bucket whose parameters are all ready is handed to the CommHook (allreduce) at once, and buckets are
// launched strictly in bucket order on every rank (bucket i only after bucket i-1). Sparse gradients
// (Embedding/EmbeddingBag with sparse(true)) are synchronized at finalize(): only touched rows travel; in
// owner and shared modes a helper thread starts summing a table's rows for their owners as soon as its
// gradient is ready (DdpOptions::overlap_sparse).
//
// WHAT THE USER MUST NOT DO
//  * Read or write any .grad() between backward() and finalize() (the communication thread owns the buckets,
//    the sparse helper reads the sparse gradients). Replacing a sparse table's .grad() with another tensor
//    there is tolerated: finalize() then sums that table's rows again from the new one.
//  * Run backward twice on a synchronized iteration without finalize() in between, under noSync() or not
//    (throws); accumulate micro-batches under noSync() before the synchronized backward instead.
//  * Add, remove or replace parameters or buffers, or change their shape/dtype/device, after construction
//    (buffers updated in place, as BatchNorm's are, are fine); swapping a parameter's .grad() for another
//    tensor is allowed but costs a copy into the bucket at the next backward.
//    Unfreezing a parameter (requires_grad false at construction, true later), and adding, removing or
//    replacing one (a module swapped in), make the next finalize() throw, naming it: its gradient would not
//    be synchronized. Build a new DistributedDataParallel after such a change.
//  * Destroy the module or the communicator before this object; use the communicator from another thread
//    while a backward or finalize() is in flight.
//  * zero_grad(set_to_none=true) (LibTorch 2.x's default) stays correct but costs one copy per parameter per
//    step; prefer optimizer.zero_grad(false) there, or ddp.zeroGrad().
//  * Issue other collectives on the same communicator between backward() and finalize() (another
//    DistributedDataParallel object's, as a GAN's generator and discriminator would, or your own) when a
//    parameter may be unused on some ranks: its bucket is held back to finalize() on those ranks only, so
//    the collectives come in another order there: a CommError naming both sides (each bucket's collective
//    is tagged with its object, iteration and bucket, comm/collective_tag.h, and checked with the rest
//    when CommOptions::check_collectives is on, the default; off, alike-sized buffers would be summed
//    together). Give each object its own communicator (comm::makeCommunicator(options, job.process(),
//    job.store())), or finalize one before the other's backward; a second object on a communicator is
//    warned about at construction.
//  * Call finalize() on some ranks and not others, or a different number of times (not detected where the
//    buckets' sizes match: a rank's stale gradient is averaged into another's step), or synchronize on some
//    ranks a backward that others run under noSync(). (How many noSync() backwards precede a rank's
//    synchronized one may differ from rank to rank: ddp.steal's ranks train as many pieces as they take.
//    Nothing leaves a rank before its synchronized backward, and every rank's finalize() waits for every
//    rank's gradients, which the trainer's shared batches rely on.)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/config/config.h"

namespace torch::nn {
class Module;
}

namespace ringtrain::ddp {

class CommHook;

// How sparse rows are synchronized.
//  kAllgather: every rank all-gathers every rank's (row ids, values); traffic per rank ~ ranks x rows.
//  kOwner:     row r belongs to rank r % world. Ranks coalesce their rows locally and send each to its
//              owner (allToAllBytes); owners sum; every rank then gathers the reduced rows from all owners.
//              Each rank sends the rows it touched (once) plus its share of the union, and receives the
//              union of touched rows: traffic grows with distinct rows, not with ranks x rows.
//  kShared:    ranks on one host map one copy of each sparse table (set up at construction, rank 0's values).
//              Rows go to their owners as in kOwner, and each owner's gradient holds only the rows it owns,
//              so its optimizer step updates those rows of the one table and no rank gathers anything: a
//              rank sends and sums about the rows it touched, and updates about as many, at any world size.
//              The optimizer's per-row state must be shared the same way (shareOnHost). Every rank's next
//              forward reads what all owners wrote, so zeroGrad() becomes collective: call it after the
//              optimizer step and before the next forward (finalize() throws when a step skipped it; if
//              only some ranks skipped it, those throw while the others wait in the exchange until the
//              communication timeout).
//              Ranks on several hosts, tables on a GPU, or comm.same_host_copy off fall back to kAllgather,
//              with a warning that says why.
//  kAuto:      kShared where it can be used, else kAllgather, saying which at info level (the training job's
//              default: its loop calls zeroGrad()).
enum class SparseSync { kOwner, kAllgather, kShared, kAuto };
// "owner" | "allgather" | "shared" | "auto"; ConfigError otherwise
SparseSync parseSparseSync(const std::string& text);
const char* toString(SparseSync mode);

inline constexpr double kDefaultBucketCapMb = 25.0;
inline constexpr double kDefaultFirstBucketMb = 1.0;

// Mirrors config::DdpOptions (plus the communication timeout).
struct DdpOptions {
  double bucket_cap_mb = kDefaultBucketCapMb;
  double first_bucket_mb = kDefaultFirstBucketMb;
  // The same parameters are used in every iteration: after the first, unused ones are known and pre-marked,
  // and detection is skipped.
  bool static_graph = false;
  // true: parameters without a gradient in an iteration are reduced at finalize() as their slot in the
  // bucket holds them (zeros after zeroGrad() or optimizer.zero_grad(); without one, the last gradient
  // again) and reported by name (warning) on the first iteration. false: such a parameter is an error
  // naming it. A dense parameter that no rank has given a gradient yet ends finalize() with an undefined
  // .grad(), as in a process of its own, so that an optimizer skips it (weight decay or momentum would move
  // it on zeros); once any rank has used it, it is reduced as above. Knowing which were used anywhere is one
  // small all-reduce per finalize() until every dense parameter has been used somewhere: a model whose
  // parameters all get gradients in the first iteration pays it once, one with a parameter never used pays
  // it every step (as PyTorch's DDP does with find_unused_parameters). Sparse tables are not covered.
  bool find_unused_parameters = true;
  std::string compression = "none";  // none | fp16 | bf16; ignored when a hook is set with setCommHook
  SparseSync sparse_sync = SparseSync::kOwner;
  // Owner and shared modes, host tables: as soon as a sparse table's gradient is ready, a helper thread
  // sums this rank's rows of it into the owners' messages while the rest of backward runs (the dense
  // buckets' overlap, for sparse rows). The result is the same, bit for bit, either way (within the rules
  // above).
  bool overlap_sparse = true;
  // finalize() (synchronized steps only) gives every rank rank 0's module buffers, e.g. BatchNorm's running
  // statistics, which each rank's forward updated from its own batch: one broadcast per (dtype, device),
  // queued behind the dense buckets; nothing when the module has no buffers. (PyTorch DDP broadcasts them
  // before each forward instead: the values every forward starts from are the same either way, and here the
  // last step's are in sync too.) false: each rank keeps its own.
  bool broadcast_buffers = true;
  // Shared sparse tables (kShared) and the tensors shareOnHost() returned are copied back into private memory
  // when this object is destroyed, in place, so that the module (and its optimizer) can be trained on or
  // wrapped again without one rank's writes reaching every rank. Destroyed after an optimizer step (no
  // zeroGrad() since the last finalize()), this object first waits for every rank's last rows, as zeroGrad()
  // does (a barrier: every rank must destroy it then), unless an exception is unwinding or a finalize() of
  // this object threw. false: they stay
  // shared, which saves a copy of every table per rank (the training job, done with its model, turns it off).
  bool unshare_at_destruction = true;
  // Shared sparse tables (kShared) and shareOnHost()'s tensors of 4 MiB or more on 2 MiB pages from the host's
  // reserved pool (hugetlbfs: sysctl vm.nr_hugepages), where it holds enough; else on ordinary pages, which
  // rank 0 says once. Private tables get transparent huge pages from the model (run.huge_pages); shared memory
  // gets none where the kernel's shmem_enabled is "never". The training job sets it from run.huge_pages.
  bool huge_pages = false;
  int64_t replica_check_every = 0;  // finalize() compares parameter checksums every N calls; 0: never
  bool rebuild_buckets = true;      // rebuild once after the first iteration in gradient-ready order
  // How long finalize() and broadcastState() wait for a dense bucket or a broadcast (fromConfig: comm.timeout_s).
  // Construction, the sparse exchange and the replica check wait as long as the communicator's own timeout
  // (config::CommOptions::timeout_s), which also bounds a collective that is still running when the
  // communicator is destroyed over the gloo or MPI transports; on the same-host path it is abandoned at once.
  std::chrono::milliseconds timeout{300000};
  // Parameters (by name in module.named_parameters()) whose gradients are sparse, besides the weights of
  // Embedding/EmbeddingBag modules with sparse(true), which are found by themselves: a module that
  // produces sparse gradients in its own backward (e.g. model::SgnsModel) names them here. A name that is
  // not a parameter of the module is a ConfigError at construction.
  std::vector<std::string> sparse_parameters;

  static DdpOptions fromConfig(const config::DdpOptions& ddp, const config::CommOptions& comm);
};

struct BucketStats {
  size_t index = 0;
  int dtype = 0;    // c10::ScalarType as int
  int device = -1;  // -1 host
  size_t bytes = 0;
  std::vector<std::string> parameters;  // in buffer order
  std::chrono::nanoseconds last_allreduce{0};  // Work::duration() of the last step
};

struct DdpStats {
  std::vector<BucketStats> buckets;
  size_t sparse_parameters = 0;
  int64_t steps = 0;                  // synchronized iterations finalized
  int64_t rebuilds = 0;
  // Synchronized steps whose finalize() found no gradient since the last one on this rank: its share of the
  // average was what its .grad() held (warned about once).
  int64_t steps_without_backward = 0;
  // Last synchronized step:
  size_t dense_bytes_sent = 0;        // bytes handed to the communicator for dense buckets
  size_t sparse_bytes_sent = 0;       // bytes this rank sent for sparse gradients
  size_t sparse_bytes_received = 0;
  size_t sparse_rows_local = 0;       // distinct rows this rank touched
  size_t sparse_rows_global = 0;      // distinct rows after synchronization (shared tables: those it owns)
  std::chrono::nanoseconds allreduce_total{0};    // sum of bucket allreduce durations
  std::chrono::nanoseconds finalize_wait{0};      // finalize() blocked on dense buckets after backward
  std::chrono::nanoseconds sparse_sync_time{0};
  std::chrono::nanoseconds sparse_exchange_time{0};  // of sparse_sync_time, in the host byte exchange
  // Not in sparse_sync_time: summing this rank's rows for their owners on the helper thread during backward
  // (DdpOptions::overlap_sparse).
  std::chrono::nanoseconds sparse_overlapped_time{0};
  size_t sparse_tables_overlapped = 0;  // sparse tables whose rows the helper's work supplied
  // Sums over all synchronized steps (for averages):
  std::chrono::nanoseconds sum_allreduce_total{0};
  std::chrono::nanoseconds sum_finalize_wait{0};
  std::chrono::nanoseconds sum_sparse_sync_time{0};
  std::chrono::nanoseconds sum_sparse_exchange_time{0};
  std::chrono::nanoseconds sum_sparse_overlapped_time{0};
  size_t sum_sparse_tables_overlapped = 0;
  size_t sum_dense_bytes_sent = 0;
  size_t sum_sparse_bytes_sent = 0;
  std::vector<std::string> unused_parameters;  // found on the first iteration

  std::string toString() const;  // readable multi-line summary
};

class DistributedDataParallel {
 public:
  // Collective: every rank constructs at the same time. `module` and `comm` must outlive this object.
  DistributedDataParallel(torch::nn::Module& module, comm::Communicator& comm, DdpOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Waits for all dense buckets, synchronizes sparse gradients: after it returns, gradients are ready.
  // Collective. Inside a noSync() scope it does nothing (gradients stay local).
  void finalize();

  // While the returned guard lives, backward accumulates gradients locally without communication (gradient
  // accumulation over micro-batches); the first backward after it synchronizes the accumulated sum.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DistributedDataParallel& ddp);
    ~NoSyncGuard();
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    DistributedDataParallel& ddp_;
    bool previous_;
  };
  [[nodiscard]] NoSyncGuard noSync() { return NoSyncGuard(*this); }

  // Zeroes every bucket in one pass per bucket and resets sparse gradients (faster than zero_grad). With
  // shared sparse tables (sharesSparseParameters()) it is collective: it first waits until every rank's
  // optimizer has written its rows.
  void zeroGrad();

  // True when the sparse parameters live in memory that every rank on this host maps (ddp.sparse_sync
  // shared, more than one rank, and no fallback); their names, in registration order.
  bool sharesSparseParameters() const;
  std::vector<std::string> sharedParameterNames() const;
  // Collective, only when sharesSparseParameters(): rank 0's `tensor` copied into memory every rank maps, for
  // state updated row by row like the shared tables (an optimizer's per-row sums and moments).
  at::Tensor shareOnHost(const at::Tensor& tensor, const std::string& what);
  // With options.huge_pages: where the shared tables and shareOnHost()'s tensors went, for rank 0 to say once
  // they are all placed (the constructor says it of the tables alone); "" on other ranks, or when no
  // shareOnHost() tensor was large enough to ask for huge pages.
  std::string sharedMemoryPagesReport() const;

  // Replaces the dense-bucket communication (default: from options.compression).
  void setCommHook(std::unique_ptr<CommHook> hook);

  // Collective: compares per-parameter checksums across ranks, frozen parameters included (not buffers);
  // throws ringtrain::Error naming every parameter (and rank) that differs from rank 0.
  void checkReplicas();

  // Collective: broadcasts parameters and buffers from rank 0 again (e.g. after loading a checkpoint there).
  // Shared sparse tables are skipped: every rank already reads rank 0's copy.
  void broadcastState();

  const DdpStats& stats() const;
  int rank() const;
  int worldSize() const;

  class Impl;  // public so the autograd hooks in the .cc can reach it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringtrain::ddp
