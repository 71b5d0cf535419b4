// The bucket readiness protocol (see distributed_data_parallel.h for the user's side):
//
//  * Each dense parameter i lives in bucket b(i) at a fixed offset; its .grad() is a tensor sharing the
//    bucket's storage (made with set_, so it is not an autograd view and optimizer.zero_grad()'s detach_
//    works on it). AccumulateGrad adds into an existing dense grad in place, so backward writes straight
//    into the bucket.
//  * A post-hook on i's grad accumulator runs right after i's gradient is accumulated. It first makes sure
//    the grad is still the bucket slot (if the user replaced or dropped it, the new values are copied in and
//    the slot is put back), then marks i ready and decrements b(i)'s pending count.
//  * Buckets are launched strictly in index order: when bucket next_launch_ has no pending parameters it is
//    taken, then the next one is examined, and so on; the buckets taken are handed to the CommHook after
//    mu_ is released (the hook is user code), each range only after every bucket before it. Every rank
//    therefore issues the same sequence of collectives whatever order its gradients arrive in.
//  * finalize() marks every parameter that got no gradient (unused this iteration) ready with its slot left
//    as the user's accumulation left it (zero after zero_grad) or zeroed if the grad was dropped, launches
//    the remaining buckets in order, waits for all of them, then synchronizes sparse gradients (not in
//    buckets), runs the replica check when due and, after the first iteration, rebuilds the buckets once
//    in the order gradients became ready on rank 0.
//  * Under noSync() the hooks only keep grads in their slots; nothing is marked or launched.
// State touched by hooks is guarded by mu_, because with CUDA tensors autograd runs hooks on its device
// threads while finalize() runs on the caller's.
#include "ringtrain/ddp/distributed_data_parallel.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_set>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>

#include "core/settings_difference.h"
#include "ddp/host_shared_tensor.h"
#include "ringtrain/comm/collective_tag.h"
#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/hash.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/ddp/bucket_assignment.h"
#include "ringtrain/ddp/comm_hook.h"
#include "ringtrain/ddp/sparse_sync.h"
#include "ringtrain/ddp/tensor_buffer.h"

namespace ringtrain::ddp {

using Clock = std::chrono::steady_clock;

SparseSync parseSparseSync(const std::string& text) {
  if (text == "owner") return SparseSync::kOwner;
  if (text == "allgather") return SparseSync::kAllgather;
  if (text == "shared") return SparseSync::kShared;
  if (text == "auto") return SparseSync::kAuto;
  RT_THROW(ConfigError, "ddp.sparse_sync: unknown value '", text, "' (expected auto, shared, allgather or owner)");
}

const char* toString(SparseSync mode) {
  switch (mode) {
    case SparseSync::kOwner: return "owner";
    case SparseSync::kAllgather: return "allgather";
    case SparseSync::kShared: return "shared";
    case SparseSync::kAuto: return "auto";
  }
  return "?";
}

DdpOptions DdpOptions::fromConfig(const config::DdpOptions& ddp, const config::CommOptions& comm) {
  DdpOptions options;
  options.bucket_cap_mb = ddp.bucket_cap_mb;
  options.first_bucket_mb = ddp.first_bucket_mb;
  options.static_graph = ddp.static_graph;
  options.find_unused_parameters = ddp.find_unused_parameters;
  options.compression = ddp.compression;
  options.sparse_sync = parseSparseSync(ddp.sparse_sync);
  options.overlap_sparse = ddp.overlap_sparse;
  options.replica_check_every = ddp.replica_check_every;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(comm.timeout_s * 1000.0));
  return options;
}

namespace {

// The DistributedDataParallel objects alive on each communicator. A second one is said (the header's rule on
// collectives between backward() and finalize()), and each gets an id for its collectives' tags: the next
// number while any object lives on the communicator, from 1 again once none does (the same on every rank,
// as the objects are built and destroyed at the same points: construction is collective).
class CommunicatorUsers {
 public:
  explicit CommunicatorUsers(const comm::Communicator& comm) : comm_(&comm) {
    std::lock_guard<std::mutex> lock(mu());
    Entry& e = entries()[comm_];
    others_ = e.live++;
    id_ = ++e.last_id;
  }
  ~CommunicatorUsers() {
    std::lock_guard<std::mutex> lock(mu());
    if (--entries()[comm_].live == 0) entries().erase(comm_);
  }
  CommunicatorUsers(const CommunicatorUsers&) = delete;
  CommunicatorUsers& operator=(const CommunicatorUsers&) = delete;
  int others() const { return others_; }
  int id() const { return id_; }

 private:
  struct Entry {
    int live = 0;
    int last_id = 0;
  };
  // Never destroyed: an object held in a static may be destroyed after these would be at exit.
  static std::mutex& mu() {
    static auto* m = new std::mutex;
    return *m;
  }
  static std::unordered_map<const comm::Communicator*, Entry>& entries() {
    static auto* e = new std::unordered_map<const comm::Communicator*, Entry>;
    return *e;
  }
  const comm::Communicator* comm_;
  int others_ = 0;
  int id_ = 1;
};

std::string describe(const at::Tensor& t) {
  std::ostringstream out;
  out << c10::toString(t.scalar_type()) << t.sizes() << " " << t.device();
  return out.str();
}

std::vector<std::string> splitLines(const std::vector<uint8_t>& bytes) {
  std::vector<std::string> lines;
  std::string line;
  for (uint8_t c : bytes) {
    if (c == '\n') {
      lines.push_back(std::move(line));
      line.clear();
    } else {
      line.push_back(static_cast<char>(c));
    }
  }
  if (!line.empty()) lines.push_back(std::move(line));
  return lines;
}

std::string ms(std::chrono::nanoseconds d) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(3);
  out << std::chrono::duration<double, std::milli>(d).count() << " ms";
  return out.str();
}

}  // namespace

class DistributedDataParallel::Impl {
 public:
  struct Param {
    std::string name;
    at::Tensor tensor;
    bool sparse = false;
    int64_t bucket = -1;   // dense only
    int64_t offset = 0;    // elements into the bucket
    at::Tensor slot;       // the grad tensor sharing the bucket's storage
    bool ready = false;    // got its gradient this iteration
    bool static_unused = false;
    bool got_gradient = false;  // a backward since the last finalize() gave it one, under noSync() too
    bool used_anywhere = false;  // some rank has given it a gradient (known to every rank alike)
  };
  struct Bucket {
    at::Tensor flat;
    std::vector<size_t> members;  // indices into params_
    size_t pending = 0;
    comm::WorkPtr work;
  };

  Impl(torch::nn::Module& module, comm::Communicator& comm, DdpOptions options)
      : module_(module), comm_(comm), users_(comm), options_(std::move(options)) {
    if (users_.others() > 0 && comm_.rank() == 0 && comm_.size() > 1) {
      warn("DistributedDataParallel: {} other DistributedDataParallel object(s) use this communicator too: "
           "where a parameter may be unused on some ranks, their collectives can come in another order on each "
           "rank (a collective mismatch); give each object its own communicator (comm::makeCommunicator), or, "
           "when this one replaces another, destroy the old one first",
           users_.others());
    }
    RT_CHECK_GT(options_.bucket_cap_mb, 0.0, "ddp.bucket_cap_mb must be positive");
    RT_CHECK_GT(options_.first_bucket_mb, 0.0, "ddp.first_bucket_mb must be positive");
    hook_ = makeCommHook(options_.compression);
    collectParameters();
    for (const auto& item : module_.named_buffers(true)) buffers_.push_back(item.value());
    checkLayout();
    broadcastState();
    chooseSparseSync();
    std::vector<size_t> dense_order;
    for (size_t i : reverseOrder(dense_.size())) dense_order.push_back(i);
    buildBuckets(dense_order);
    registerHooks();
    resetIteration();
  }

  ~Impl() {
    // The module may outlive us: take our hooks off its accumulators.
    for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
    if (options_.unshare_at_destruction && sharesSparseParameters()) {
      // After a step's finalize() and before zeroGrad(), owners may still be writing rows: wait for them as
      // zeroGrad() would, unless this rank failed (unwinding, or a finalize() that threw and was caught): its
      // peers are then in some other collective, or gone.
      if (awaiting_zero_grad_ && !finalize_failed_ && std::uncaught_exceptions() == 0) {
        try {
          comm_.barrier();
        } catch (const std::exception& e) {
          ringtrain::error("DistributedDataParallel: the other ranks' last rows were not waited for ({}): the "
                           "private copies of the shared tables may miss them", e.what());
        }
      }
      unshare();
    }
  }

  // The shared tables and shareOnHost()'s tensors become private copies of what they hold now, in place (the
  // same TensorImpls, so the module and the optimizer see the copies): trained on without this object, or
  // wrapped again in another mode, a rank must not write into the memory every rank reads.
  void unshare() noexcept {
    try {
      torch::NoGradGuard no_grad;
      for (size_t i : sparse_) {
        at::Tensor& t = params_[i].tensor;
        if (shared_tables_.count(t.unsafeGetTensorImpl()) != 0) t.set_data(t.detach().clone());
      }
      for (at::Tensor& t : shared_state_) t.set_data(t.detach().clone());
    } catch (const std::exception& e) {
      ringtrain::error("DistributedDataParallel: the shared sparse tables could not be copied back into private "
                       "memory ({}): they stay shared by the host's ranks", e.what());
    }
  }

  // ---- construction -------------------------------------------------------------------------------
  void collectParameters() {
    std::unordered_set<const void*> sparse_weights;
    for (const auto& item : module_.named_modules()) {
      if (auto* e = dynamic_cast<torch::nn::EmbeddingImpl*>(item.value().get())) {
        if (e->options.sparse()) sparse_weights.insert(e->weight.unsafeGetTensorImpl());
      } else if (auto* b = dynamic_cast<torch::nn::EmbeddingBagImpl*>(item.value().get())) {
        if (b->options.sparse()) sparse_weights.insert(b->weight.unsafeGetTensorImpl());
      }
    }
    for (const std::string& name : options_.sparse_parameters) {
      RT_CHECK_T(ConfigError, module_.named_parameters(true).find(name) != nullptr,
                 "DistributedDataParallel: DdpOptions::sparse_parameters names '", name,
                 "', which is not a parameter of the module");
    }
    for (const auto& item : module_.named_parameters(/*recurse=*/true)) {
      registered_.emplace_back(item.key(), item.value());
      if (!item.value().requires_grad()) {
        frozen_.emplace_back(item.key(), item.value());
        continue;
      }
      Param p;
      p.name = item.key();
      p.tensor = item.value();
      p.sparse = sparse_weights.count(p.tensor.unsafeGetTensorImpl()) > 0 ||
                 std::find(options_.sparse_parameters.begin(), options_.sparse_parameters.end(), p.name) !=
                     options_.sparse_parameters.end();
      (p.sparse ? sparse_ : dense_).push_back(params_.size());
      // Sparse tables sync in reverse registration order, as dense buckets fill: backward usually readies
      // the last-used table first, so the helper can start on it (prepare() takes tables in order).
      if (p.sparse) sparse_sync_order_.insert(sparse_sync_order_.begin(), params_.size());
      params_.push_back(std::move(p));
    }
  }

  // "options: bucket_cap_mb=25 ..." (every option that shapes what the ranks exchange, or when).
  std::string optionsLine() const {
    return fmt::format("options: bucket_cap_mb={} first_bucket_mb={} static_graph={} find_unused_parameters={} "
                       "compression={} sparse_sync={} overlap_sparse={} broadcast_buffers={} replica_check_every={} "
                       "rebuild_buckets={}",
                       options_.bucket_cap_mb, options_.first_bucket_mb, options_.static_graph,
                       options_.find_unused_parameters, options_.compression, toString(options_.sparse_sync),
                       options_.overlap_sparse, options_.broadcast_buffers, options_.replica_check_every,
                       options_.rebuild_buckets);
  }
  // "static_graph is false on rank 0 and true on rank 1; ..." from two optionsLine()s.
  static std::string optionsDifference(const std::string& reference, const std::string& other, int rank) {
    const std::string out = ::ringtrain::detail::settingsDifference(reference, 0, other, rank, ' ');
    return out.empty() ? "'" + reference + "' against '" + other + "'" : out;
  }

  // Every rank sends one line per parameter, frozen ones too (marked, so that a parameter frozen on one rank
  // only is named as such, not taken for a missing one); all compare with rank 0 and fail on the first
  // difference.
  void checkLayout() {
    std::unordered_set<std::string> sparse_names;
    for (const Param& p : params_) {
      if (p.sparse) sparse_names.insert(p.name);
    }
    std::string text;
    for (const auto& item : module_.named_parameters(/*recurse=*/true)) {
      const char* kind = !item.value().requires_grad() ? " frozen (requires_grad false)"
                         : sparse_names.count(item.key()) > 0 ? " sparse"
                                                              : "";
      text += item.key() + " " + describe(item.value()) + kind + "\n";
    }
    // The options that shape the collectives, last: ranks built with others (another bucket size, a
    // compression, a sparse mode) otherwise met in a bare collective mismatch, or not at all (static_graph).
    const std::string options_line = optionsLine();
    text += options_line + "\n";
    std::vector<uint8_t> mine(text.begin(), text.end());
    auto all = comm_.allgatherBytes(mine);
    RT_CHECK_EQ(all.size(), static_cast<size_t>(comm_.size()));
    auto reference = splitLines(all[0]);
    RT_CHECK(!reference.empty(), "DistributedDataParallel: rank 0's layout is empty");
    const std::string reference_options = reference.back();
    reference.pop_back();
    for (int r = 1; r < comm_.size(); ++r) {
      auto lines = splitLines(all[r]);
      RT_CHECK(!lines.empty(), "DistributedDataParallel: rank ", r, "'s layout is empty");
      const std::string options = lines.back();
      lines.pop_back();
      if (options != reference_options) {
        RT_THROW(ConfigError, "DistributedDataParallel: rank ", r, " was built with other DdpOptions than rank 0: ",
                 optionsDifference(reference_options, options, r));
      }
      for (size_t i = 0; i < std::max(lines.size(), reference.size()); ++i) {
        const std::string a = i < reference.size() ? reference[i] : "<none>";
        const std::string b = i < lines.size() ? lines[i] : "<none>";
        if (a != b) {
          const std::string name = (i < reference.size() ? a : b).substr(0, (i < reference.size() ? a : b).find(' '));
          // The program or its configuration differs across ranks: bad input (exit 2), not a failure.
          RT_THROW(ConfigError, "DistributedDataParallel: the model on rank ", r, " differs from rank 0 at parameter ",
                   i, " '", name, "': rank 0 has '", a, "', rank ", r, " has '", b, "'");
        }
      }
    }
  }

  // Settles the sparse sync mode. For shared (or auto, where it can), the sparse tables move into memory
  // every rank on the host maps, holding rank 0's values (the broadcast just made them equal). The decision
  // is the same on every rank: peer memory is agreed by all ranks, and checkLayout() compared the tables'
  // devices.
  void chooseSparseSync() {
    const SparseSync asked = options_.sparse_sync;
    const bool wants_shared = asked == SparseSync::kShared || asked == SparseSync::kAuto;
    if (asked == SparseSync::kAuto) options_.sparse_sync = SparseSync::kAllgather;  // unless sharing works below
    if (wants_shared && comm_.size() > 1 && !sparse_.empty()) shareSparseTables(asked);
    sparse_sync_ = std::make_unique<SparseRowSync>(options_.sparse_sync);
  }

  void shareSparseTables(SparseSync asked) {
    std::string why_not;
    for (size_t i : sparse_) {
      if (why_not.empty() && !params_[i].tensor.is_cpu()) {
        why_not = "'" + params_[i].name + "' is on " + params_[i].tensor.device().str();
      }
    }
    if (why_not.empty() && !comm_.canReadPeerMemory()) {
      why_not = "the ranks do not all share one host (or comm.same_host_copy is off)";
    }
    // Every copy is made before any table moves, so that a failure (agreed by all ranks) leaves every rank
    // on its private tables, all-gathering.
    std::vector<at::Tensor> copies;
    for (size_t k = 0; k < sparse_.size() && why_not.empty(); ++k) {
      const Param& p = params_[sparse_[k]];
      bool used = false;
      std::string why_not_huge;
      copies.push_back(detail::tryShareOnHost(comm_, p.tensor, p.name, why_not, {options_.huge_pages, &used, &why_not_huge}));
      huge_pages_.add(static_cast<size_t>(p.tensor.numel()) * p.tensor.element_size(), used, why_not_huge);
    }
    if (!why_not.empty()) {
      if (comm_.rank() == 0 && asked == SparseSync::kShared) {
        warn("ddp.sparse_sync: shared cannot be used here: {}; sparse rows are all-gathered", why_not);
      } else if (comm_.rank() == 0) {
        info("ddp.sparse_sync auto: sparse rows are all-gathered ({})", why_not);
      }
      options_.sparse_sync = SparseSync::kAllgather;
      return;
    }
    options_.sparse_sync = SparseSync::kShared;
    huge_pages_asked_by_tables_ = huge_pages_.asked();
    if (comm_.rank() == 0 && options_.huge_pages) {
      const std::string report = huge_pages_.report("shared sparse tables");
      if (!report.empty()) info("ddp: {}", report);
    }
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < sparse_.size(); ++k) {
      Param& p = params_[sparse_[k]];
      p.tensor.set_data(copies[k]);
      shared_tables_.insert(p.tensor.unsafeGetTensorImpl());
    }
    releaseFreedMemory();  // the private copies just freed: the heap would otherwise keep them
  }

  bool sharesSparseParameters() const { return !shared_tables_.empty(); }

  std::vector<at::Tensor> sparseInSyncOrder() const {
    std::vector<at::Tensor> tables;
    for (size_t i : sparse_sync_order_) tables.push_back(params_[i].tensor);
    return tables;
  }

  void broadcastState() {
    if (comm_.size() == 1) return;
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> tensors;
    for (const auto& item : module_.named_parameters(true)) {
      if (shared_tables_.count(item.value().unsafeGetTensorImpl()) == 0) tensors.push_back(item.value());
    }
    for (const auto& item : module_.named_buffers(true)) tensors.push_back(item.value());
    for (auto& group : launchBroadcasts(tensors)) finishBroadcast(group);
    // Shared tables were skipped (every rank reads rank 0's copy): still, no rank may read them before rank 0
    // is done with whatever it wrote there before calling this.
    if (!shared_tables_.empty()) comm_.barrier();
  }

  // Tensors of one (dtype, device), packed into one flat tensor that travels in one broadcast.
  struct BroadcastGroup {
    std::vector<at::Tensor> members;
    at::Tensor flat;
    comm::WorkPtr work;
  };

  // Broadcasts `tensors` from rank 0, one collective per (dtype, device) group in a fixed order; the
  // members take rank 0's values in finishBroadcast().
  std::vector<BroadcastGroup> launchBroadcasts(const std::vector<at::Tensor>& tensors) {
    std::vector<BroadcastGroup> groups;
    std::vector<std::pair<c10::ScalarType, c10::Device>> kinds;
    for (const auto& t : tensors) {
      if (t.numel() == 0) continue;
      std::pair<c10::ScalarType, c10::Device> kind{t.scalar_type(), t.device()};
      auto it = std::find(kinds.begin(), kinds.end(), kind);
      if (it == kinds.end()) {
        kinds.push_back(kind);
        groups.emplace_back();
        it = kinds.end() - 1;
      }
      groups[it - kinds.begin()].members.push_back(t);
    }
    for (auto& group : groups) {
      std::vector<at::Tensor> flat_parts;
      for (auto& t : group.members) flat_parts.push_back(t.reshape({-1}));
      group.flat = at::cat(flat_parts);
      group.work = comm_.broadcastAsync(asBuffer(group.flat), 0);
    }
    return groups;
  }

  void finishBroadcast(BroadcastGroup& group) {
    torch::NoGradGuard no_grad;
    group.work->wait(options_.timeout);
    int64_t offset = 0;
    for (auto& t : group.members) {
      t.copy_(group.flat.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }

  // `order` lists positions in dense_ (not params_) in visiting order.
  void buildBuckets(const std::vector<size_t>& order) {
    torch::NoGradGuard no_grad;
    std::vector<BucketParam> specs;
    for (size_t d : dense_) {
      const at::Tensor& t = params_[d].tensor;
      specs.push_back({static_cast<size_t>(t.numel()) * t.element_size(), static_cast<int>(t.scalar_type()),
                       t.is_cuda() ? static_cast<int>(t.get_device()) : -1});
    }
    BucketLimits limits;
    limits.first_cap_bytes = static_cast<size_t>(options_.first_bucket_mb * 1024 * 1024);
    limits.cap_bytes = static_cast<size_t>(options_.bucket_cap_mb * 1024 * 1024);
    auto assignment = assignBuckets(specs, order, limits);

    std::vector<Bucket> buckets;
    for (size_t b = 0; b < assignment.size(); ++b) {
      Bucket bucket;
      int64_t numel = 0;
      for (size_t position : assignment[b]) numel += params_[dense_[position]].tensor.numel();
      const at::Tensor& first = params_[dense_[assignment[b].front()]].tensor;
      bucket.flat = at::zeros({numel}, first.options().requires_grad(false));
      int64_t offset = 0;
      for (size_t position : assignment[b]) {
        Param& p = params_[dense_[position]];
        bucket.members.push_back(dense_[position]);
        at::Tensor slot = at::empty({0}, bucket.flat.options());
        slot.set_(bucket.flat.storage(), offset, p.tensor.sizes(), c10::contiguous_strides(p.tensor.sizes()));
        const at::Tensor& old = p.tensor.grad();
        if (old.defined()) slot.copy_(old.is_sparse() ? old.to_dense() : old);
        p.tensor.mutable_grad() = slot;
        p.slot = slot;
        p.bucket = static_cast<int64_t>(b);
        p.offset = offset;
        offset += p.tensor.numel();
      }
      buckets.push_back(std::move(bucket));
    }
    buckets_ = std::move(buckets);
    bucket_order_ = order;
    refreshBucketStats();
  }

  void refreshBucketStats() {
    stats_.buckets.clear();
    for (size_t b = 0; b < buckets_.size(); ++b) {
      BucketStats s;
      s.index = b;
      s.dtype = static_cast<int>(buckets_[b].flat.scalar_type());
      s.device = buckets_[b].flat.is_cuda() ? buckets_[b].flat.get_device() : -1;
      s.bytes = static_cast<size_t>(buckets_[b].flat.numel()) * buckets_[b].flat.element_size();
      for (size_t i : buckets_[b].members) s.parameters.push_back(params_[i].name);
      stats_.buckets.push_back(std::move(s));
    }
    stats_.sparse_parameters = sparse_.size();
  }

  class ReadyHook : public torch::autograd::FunctionPostHook {
   public:
    ReadyHook(Impl* impl, size_t index) : impl_(impl), index_(index) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list& /*inputs*/) override {
      impl_->onGradReady(index_);
      return outputs;
    }

   private:
    Impl* impl_;  // the Impl removes this hook in its destructor
    size_t index_;
  };

  void registerHooks() {
    for (size_t i = 0; i < params_.size(); ++i) {
      auto accumulator = torch::autograd::impl::grad_accumulator(params_[i].tensor);
      RT_CHECK(accumulator != nullptr, "parameter '", params_[i].name, "' has no gradient accumulator");
      hook_keys_.push_back(accumulator->add_post_hook(std::make_unique<ReadyHook>(this, i)));
      accumulators_.push_back(std::move(accumulator));  // keeps the node (and our hook) alive
    }
  }

  // ---- per iteration ------------------------------------------------------------------------------
  // Puts the grad back into its bucket slot if the user (or zero_grad(set_to_none)) replaced it.
  void ensureSlot(Param& p) {
    const at::Tensor& grad = p.tensor.grad();
    if (grad.defined() && grad.unsafeGetTensorImpl() == p.slot.unsafeGetTensorImpl()) return;
    if (grad.defined() && !grad.is_sparse() && grad.data_ptr() == p.slot.data_ptr()) return;
    torch::NoGradGuard no_grad;
    if (grad.defined()) {
      p.slot.copy_(grad.is_sparse() ? grad.to_dense() : grad);
    } else {
      p.slot.zero_();
    }
    p.tensor.mutable_grad() = p.slot;
    ++slot_copies_;
  }

  // Buckets [first, end) whose turn came under mu_, handed to the CommHook after mu_ is released.
  struct LaunchRange {
    size_t first = 0, end = 0;
  };

  void onGradReady(size_t index) {
    LaunchRange ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready = markReadyLocked(index);
    }
    launchInOrder(ready);
  }

  LaunchRange markReadyLocked(size_t index) {
    Param& p = params_[index];
    gradient_since_finalize_ = true;
    p.got_gradient = true;
    // Micro-batches accumulate under noSync() before the synchronized backward, never after it: what it
    // readied may be on its way already, and what it did not would go out with a gradient the user did not
    // mean for this step.
    RT_CHECK(!(no_sync_ && synchronized_backward_), "DistributedDataParallel: parameter '", p.name,
             "' received a gradient under noSync() after this iteration's synchronized backward; call "
             "finalize() first (accumulate micro-batches under noSync() before the synchronized backward)");
    RT_CHECK(!(p.static_unused && !no_sync_), "DistributedDataParallel: parameter '", p.name, "' got no gradient "
             "in the first iteration, so static_graph took it as unused in every iteration, and now it has one: "
             "with static_graph every iteration must use the same parameters (turn static_graph off)");
    if (!no_sync_) synchronized_backward_ = true;
    // After this iteration's synchronized gradient, another one (a second backward, under noSync() or not)
    // would change what is already on its way to the other ranks. A static_graph parameter pre-marked unused
    // is "ready" from the start: under noSync() its gradient only waits in its slot, as before.
    RT_CHECK(!p.ready || (no_sync_ && p.static_unused), "DistributedDataParallel: parameter '", p.name,
             "' received a second gradient before finalize(); call finalize() after each backward, and "
             "accumulate micro-batches under noSync() before the synchronized backward");
    if (p.sparse) {
      if (no_sync_) return {};
      p.ready = true;
      if (options_.overlap_sparse && comm_.size() > 1) {
        const std::vector<at::Tensor> tables = sparseInSyncOrder();
        const auto at = std::find(sparse_sync_order_.begin(), sparse_sync_order_.end(), index);
        sparse_sync_->prepare(comm_, tables, static_cast<size_t>(at - sparse_sync_order_.begin()), p.tensor.grad());
      }
      return {};
    }
    ensureSlot(p);
    if (no_sync_) return {};
    p.ready = true;
    if (record_order_) ready_order_.push_back(index);
    Bucket& bucket = buckets_[p.bucket];
    if (--bucket.pending == 0) return takeReadyLocked();
    return {};
  }

  // The buckets from next_launch_ on that have nothing pending: theirs is the next turn.
  LaunchRange takeReadyLocked() {
    LaunchRange r{next_launch_, next_launch_};
    while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) ++next_launch_;
    r.end = next_launch_;
    return r;
  }

  // Hands buckets [first, end) to the CommHook (user code) outside mu_, in bucket order: a range waits
  // until every bucket before it has been handed over by the thread that took it (another device's
  // autograd thread). Until launched_ passes them, the range's buckets are this thread's alone.
  void launchInOrder(LaunchRange r) {
    if (r.first == r.end) return;
    std::unique_lock<std::mutex> lock(launch_mu_);
    if (!launch_cv_.wait_for(lock, options_.timeout, [&] { return launched_ == r.first; })) {
      RT_THROW(TimeoutError, "DistributedDataParallel: bucket ", r.first, " waited ", options_.timeout.count(),
               " ms for bucket ", launched_, " to be handed to the communication hook (rank ", comm_.rank(), ")");
    }
    lock.unlock();
    // Every bucket of the range goes to the hook even after one throws: which buckets share a range differs
    // between ranks, and the ranks must still issue the same collectives for the others.
    std::exception_ptr failure;
    size_t bytes = 0;
    for (size_t b = r.first; b < r.end && comm_.size() > 1; ++b) {  // alone, a gradient is its own average
      Bucket& bucket = buckets_[b];
      try {
        // Labelled with this object, iteration and bucket: where ranks issue alike-shaped collectives in
        // another order (another object's, a held-back bucket's, a step's against the next), the check
        // names both instead of summing them together.
        const comm::CollectiveTag tag(comm::ddpTag(users_.id(), stats_.steps, static_cast<int64_t>(b)));
        bucket.work = hook_->run(comm_, bucket.flat);
        bytes += hook_->wireBytes(static_cast<size_t>(bucket.flat.numel()) * bucket.flat.element_size(),
                                  bucket.flat.element_size());
      } catch (...) {
        if (!failure) failure = std::current_exception();
      }
    }
    lock.lock();
    launched_ = r.end;
    dense_bytes_ += bytes;
    if (failure && !launch_failure_) launch_failure_ = failure;
    lock.unlock();
    launch_cv_.notify_all();
    if (failure) std::rethrow_exception(failure);
  }

  // The first hook error of this iteration, kept until the next iteration starts (after a successful
  // finalize()): a finalize() called again after a failed one fails again.
  std::exception_ptr launchFailure() {
    std::lock_guard<std::mutex> lock(launch_mu_);
    return launch_failure_;
  }

  void resetIteration() {
    synchronized_backward_ = false;
    gradient_since_finalize_ = false;
    for (Param& p : params_) {
      p.ready = p.static_unused;
      p.got_gradient = false;
    }
    for (Bucket& b : buckets_) {
      b.pending = 0;
      b.work.reset();
      for (size_t i : b.members) {
        if (!params_[i].static_unused) ++b.pending;
      }
    }
    next_launch_ = 0;
    std::lock_guard<std::mutex> lock(launch_mu_);
    launched_ = 0;
    dense_bytes_ = 0;
    launch_failure_ = nullptr;
  }

  void finalize() {
    if (no_sync_) return;
    const auto start = Clock::now();
    std::vector<std::string> unused;
    LaunchRange rest;
    // A hook that threw in backward stopped it there: the parameters after it got no gradient, though
    // they are not unused. Their buckets still go out (every rank issues the same collectives), and the
    // step then fails with the hook's error.
    const bool hook_failed = launchFailure() != nullptr;
    std::string unused_error;  // with detection off: thrown once this step's collectives are done
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i : dense_) {
        Param& p = params_[i];
        if (p.ready) continue;
        if (!hook_failed) unused.push_back(p.name);
        ensureSlot(p);  // keeps accumulated (noSync) or zeroed values; zeroes a dropped grad
        p.ready = true;
        if (first_iteration_ && options_.static_graph && !hook_failed) p.static_unused = true;
        --buckets_[p.bucket].pending;
      }
      // Not thrown here but at the end: a rank that skipped its remaining collectives would leave the ranks
      // that used every parameter waiting in them until the communication timeout, blaming nobody.
      if (!unused.empty() && !options_.find_unused_parameters && !options_.static_graph) {
        unused_error = ::ringtrain::detail::concat(
            "DistributedDataParallel: parameters without a gradient this iteration on rank ", comm_.rank(), ": ",
            fmt::format("{}", fmt::join(unused, ", ")),
            " (set DdpOptions::find_unused_parameters, ddp.find_unused_parameters in a job file, to reduce them "
            "as zeros)");
      }
      rest = takeReadyLocked();
      RT_CHECK_EQ(next_launch_, buckets_.size(), "all buckets must be launched at finalize");
    }
    // Backward has returned, so every range taken during it was handed over, and this one's turn is now.
    // A hook that fails here is kept in launch_failure_, like one that failed in backward: its bucket has no
    // reduction, and the step fails once the collectives the other buckets started are done.
    try {
      launchInOrder(rest);
    } catch (...) {
      if (!launchFailure()) throw;
    }
    const std::exception_ptr launch_failure = launchFailure();
    {
      std::lock_guard<std::mutex> lock(launch_mu_);
      RT_CHECK_EQ(launched_, buckets_.size(), "all buckets must be handed to the hook at finalize");
    }
    if (!gradient_since_finalize_ && !hook_failed) {
      // Legitimate for a rank out of data that keeps its peers company (its share counts as zeros, or as
      // whatever its gradients still hold), and a silent wrong average when a backward was forgotten.
      ++stats_.steps_without_backward;
      if (!warned_no_backward_) {
        warned_no_backward_ = true;
        warn("DistributedDataParallel: rank {} called finalize() with no backward since the last one (step {}): "
             "its gradients enter the average as they stand (zeros after zero_grad); said once, counted in "
             "stats().steps_without_backward", comm_.rank(), stats_.steps + 1);
      }
    }
    if (first_iteration_ && !unused.empty() && unused_error.empty()) {
      warn("DistributedDataParallel: {} parameter(s) got no gradient in the first iteration on this rank and "
           "are reduced as zeros where other ranks gave them one (where no rank did, they keep no gradient): {}",
           unused.size(), fmt::join(unused, ", "));
      stats_.unused_parameters = unused;
    }
    // The collectives finalize() issues itself from here on (buffers, sparse rows, never-used parameters, the
    // replica check, the first rebuild) are labelled too: against a rank whose finalize() count differs, the
    // check then says "another iteration" instead of blaming an untagged collective of the caller's.
    const comm::CollectiveTag own_collectives(comm::ddpTag(users_.id(), stats_.steps, comm::kDdpFinalizeTag));
    // Buffers (BatchNorm's running statistics) were updated by each rank's own forward: rank 0's travel
    // behind the dense buckets, so every rank's next forward starts from the same ones.
    std::vector<BroadcastGroup> buffer_groups;
    if (options_.broadcast_buffers && comm_.size() > 1 && !buffers_.empty()) buffer_groups = launchBroadcasts(buffers_);
    std::chrono::nanoseconds total{0};
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (!buckets_[b].work) continue;  // world size 1, or its hook failed
      buckets_[b].work->wait(options_.timeout);
      stats_.buckets[b].last_allreduce = buckets_[b].work->duration();
      total += stats_.buckets[b].last_allreduce;
    }
    for (auto& group : buffer_groups) finishBroadcast(group);
    if (launch_failure) std::rethrow_exception(launch_failure);
    stats_.finalize_wait = Clock::now() - start;
    stats_.allreduce_total = total;
    {
      std::lock_guard<std::mutex> lock(launch_mu_);
      stats_.dense_bytes_sent = dense_bytes_;
    }

    // Checked only now, with this step's dense buckets done: a rank that threw while its peers still waited
    // on them would leave those peers to the communication timeout.
    if (sharesSparseParameters() && awaiting_zero_grad_) {
      RT_THROW(Error, "DistributedDataParallel: finalize() again without ddp.zeroGrad() since the last one: with "
               "shared sparse tables (ddp.sparse_sync shared) call ddp.zeroGrad() after the optimizer step and "
               "before the next forward, on every rank: it waits until every owner has written its rows (rank ",
               comm_.rank(), ", step ", stats_.steps + 1, ")");
    }
    const auto sparse_start = Clock::now();
    SparseSyncCounts counts;
    // Alone, a rank's sparse gradients are already the average: no copy, no host round trip.
    const bool sync_sparse = comm_.size() > 1;
    if (sync_sparse && !sparse_.empty()) {
      std::vector<at::Tensor> grads;
      for (size_t i : sparse_sync_order_) grads.push_back(params_[i].tensor.grad());
      std::vector<at::Tensor> results = sparse_sync_->sync(comm_, sparseInSyncOrder(), grads, counts);
      for (size_t k = 0; k < sparse_sync_order_.size(); ++k) {
        params_[sparse_sync_order_[k]].tensor.mutable_grad() = results[k];
      }
    }
    stats_.sparse_sync_time = Clock::now() - sparse_start;
    stats_.sparse_exchange_time = counts.exchange_time;
    stats_.sparse_overlapped_time = counts.overlapped_time;
    stats_.sparse_tables_overlapped = counts.tables_overlapped;
    awaiting_zero_grad_ = sharesSparseParameters();
    stats_.sparse_bytes_sent = counts.bytes_sent;
    stats_.sparse_bytes_received = counts.bytes_received;
    stats_.sparse_rows_local = counts.rows_local;
    stats_.sparse_rows_global = counts.rows_global;

    ++stats_.steps;
    stats_.sum_allreduce_total += stats_.allreduce_total;
    stats_.sum_finalize_wait += stats_.finalize_wait;
    stats_.sum_sparse_sync_time += stats_.sparse_sync_time;
    stats_.sum_sparse_exchange_time += stats_.sparse_exchange_time;
    stats_.sum_sparse_overlapped_time += stats_.sparse_overlapped_time;
    stats_.sum_sparse_tables_overlapped += stats_.sparse_tables_overlapped;
    stats_.sum_dense_bytes_sent += stats_.dense_bytes_sent;
    stats_.sum_sparse_bytes_sent += stats_.sparse_bytes_sent;

    if (options_.replica_check_every > 0 && stats_.steps % options_.replica_check_every == 0) checkReplicas();
    if (first_iteration_) {
      first_iteration_ = false;
      record_order_ = false;
      if (options_.rebuild_buckets) rebuildFromObservedOrder();
    }
    if (seeking_never_used_) settleNeverUsed();  // after the rebuild, which gives every parameter its new slot
    resetIteration();
    // Only now, with every collective of this finalize() done (dense buckets, sparse sync, replica check,
    // the first iteration's rebuild): the other ranks are not left waiting in one of them.
    checkParametersUnchanged();  // first: the old tensors of a replaced module are "unused" below
    if (!unused_error.empty()) RT_THROW(Error, unused_error);
    for (const auto& [name, tensor] : frozen_) {
      RT_CHECK(!tensor.requires_grad(), "DistributedDataParallel: parameter '", name, "' was frozen (requires_grad "
               "false) when this object was built and requires a gradient now: its gradient is not synchronized. "
               "Build a new DistributedDataParallel after changing requires_grad (rank ", comm_.rank(), ")");
    }
  }

  // A module replaced, or a parameter added or removed, after this object was built: the new tensors' gradients
  // are not synchronized and the replicas drift apart, while checkReplicas() (which compares the tensors held
  // since construction) still agrees. Found at the first finalize() after, by name and tensor identity
  // (set_data keeps a tensor's identity: shared tables and rebuilt slots stay the same tensors).
  void checkParametersUnchanged() const {
    const auto now = module_.named_parameters(/*recurse=*/true);
    size_t i = 0;
    for (const auto& item : now) {
      const bool same = i < registered_.size() && registered_[i].first == item.key() &&
                        registered_[i].second.is_same(item.value());
      if (!same) {
        const bool known = std::any_of(registered_.begin(), registered_.end(),
                                       [&](const auto& r) { return r.first == item.key(); });
        RT_THROW(Error, "DistributedDataParallel: parameter '", item.key(), "' ",
                 known ? "is another tensor than" : "was not a parameter of the module", " when this object was built "
                 "(a module replaced, or a parameter added or removed, after wrapping): its gradient is not "
                 "synchronized and the replicas would drift apart. Build the DistributedDataParallel once the model "
                 "is complete (rank ", comm_.rank(), ", step ", stats_.steps, ")");
      }
      ++i;
    }
    if (i < registered_.size()) {
      RT_THROW(Error, "DistributedDataParallel: parameter '", registered_[i].first, "' is no longer a parameter of "
               "the module (removed after wrapping). Build the DistributedDataParallel once the model is complete "
               "(rank ", comm_.rank(), ", step ", stats_.steps, ")");
    }
  }

  // A dense parameter that no rank has given a gradient yet keeps an undefined one after finalize(), as in a
  // process of its own, so that an optimizer skips it: its bucket slot holds zeros, which weight decay or
  // momentum would otherwise apply (PyTorch's DDP leaves such a gradient untouched too). Whether any rank
  // used each parameter is one small all-reduce per finalize(), only until every dense parameter has been
  // used somewhere: a model whose parameters all get gradients in its first iteration pays it once, one
  // with a parameter never used pays it every step (as PyTorch's DDP does with find_unused_parameters).
  void settleNeverUsed() {
    std::vector<float> used;
    for (size_t i : dense_) used.push_back(params_[i].got_gradient ? 1.0f : 0.0f);
    if (used.empty()) {
      seeking_never_used_ = false;
      return;
    }
    if (comm_.size() > 1) {
      at::Tensor wire = at::tensor(used).to(params_[dense_.front()].tensor.device());
      comm_.allreduceAsync(asBuffer(wire), comm::ReduceOp::kSum)->wait(options_.timeout);
      wire = wire.to(at::kCPU);
      std::memcpy(used.data(), wire.data_ptr<float>(), used.size() * sizeof(float));
    }
    bool all_used = true;
    for (size_t d = 0; d < dense_.size(); ++d) {
      Param& p = params_[dense_[d]];
      p.used_anywhere = p.used_anywhere || used[d] > 0.0f;
      if (p.used_anywhere) continue;
      all_used = false;
      p.tensor.mutable_grad() = at::Tensor();  // zeroGrad() or its next gradient puts its slot back
    }
    // static_graph included: a parameter it pre-marked unused may still get a gradient under noSync(), which
    // must then be kept, on every rank alike.
    seeking_never_used_ = !all_used;
  }

  // Rank 0's gradient-ready order wins; every rank rebuilds identically (or not at all).
  void rebuildFromObservedOrder() {
    std::vector<size_t> position_of(params_.size(), 0);
    for (size_t d = 0; d < dense_.size(); ++d) position_of[dense_[d]] = d;
    std::vector<size_t> observed;
    for (size_t i : ready_order_) observed.push_back(position_of[i]);
    std::vector<size_t> order = completeOrder(observed, dense_.size());
    at::Tensor wire = at::empty({static_cast<int64_t>(order.size())}, at::kLong);
    for (size_t k = 0; k < order.size(); ++k) wire[k].fill_(static_cast<int64_t>(order[k]));
    if (comm_.size() > 1 && !order.empty()) comm_.broadcastAsync(asBuffer(wire), 0)->wait(options_.timeout);
    const int64_t* data = wire.data_ptr<int64_t>();
    std::vector<size_t> agreed(data, data + order.size());
    ready_order_.clear();
    if (agreed == bucket_order_) return;
    buildBuckets(agreed);  // copies the current (already averaged) grads into the new slots
    ++stats_.rebuilds;
  }

  void checkReplicas() {
    torch::NoGradGuard no_grad;
    // Frozen parameters too: one unfrozen after construction would change without being synchronized.
    std::vector<std::pair<std::string, at::Tensor>> compared;
    for (const Param& p : params_) compared.emplace_back(p.name, p.tensor);
    compared.insert(compared.end(), frozen_.begin(), frozen_.end());
    std::vector<uint64_t> sums;
    for (const auto& [name, tensor] : compared) {
      at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
      sums.push_back(fnv1a64(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size()));
    }
    std::vector<uint8_t> mine(sums.size() * sizeof(uint64_t));
    if (!mine.empty()) std::memcpy(mine.data(), sums.data(), mine.size());
    auto all = comm_.allgatherBytes(mine);
    std::string report;
    for (int r = 1; r < comm_.size(); ++r) {
      RT_CHECK_EQ(all[r].size(), mine.size(), "replica checksums differ in length");
      for (size_t i = 0; i < compared.size(); ++i) {
        uint64_t a, b;
        std::memcpy(&a, all[0].data() + i * sizeof(uint64_t), sizeof(uint64_t));
        std::memcpy(&b, all[r].data() + i * sizeof(uint64_t), sizeof(uint64_t));
        if (a != b) report += " '" + compared[i].first + "' (rank " + std::to_string(r) + ")";
      }
    }
    if (!report.empty()) {
      RT_THROW(Error, "DistributedDataParallel: replicas diverged from rank 0 at step ", stats_.steps,
               ", parameters:", report);
    }
  }

  void zeroGrad() {
    if (sharesSparseParameters()) {
      comm_.barrier();  // every owner has written its rows: the next forward may read them
      awaiting_zero_grad_ = false;
    }
    torch::NoGradGuard no_grad;
    for (Bucket& b : buckets_) b.flat.zero_();
    for (size_t i : dense_) {
      Param& p = params_[i];
      if (!p.tensor.grad().defined() || p.tensor.grad().data_ptr() != p.slot.data_ptr()) {
        p.tensor.mutable_grad() = p.slot;
      }
    }
    for (size_t i : sparse_) params_[i].tensor.mutable_grad() = at::Tensor();
  }

  torch::nn::Module& module_;      // outlives us (constructor contract)
  comm::Communicator& comm_;       // outlives us (constructor contract)
  CommunicatorUsers users_;
  DdpOptions options_;
  std::unique_ptr<SparseRowSync> sparse_sync_;  // the settled mode; keeps its scratch from step to step
  std::unordered_set<const void*> shared_tables_;  // TensorImpls of sparse tables mapped by every rank
  bool awaiting_zero_grad_ = false;                 // shared tables: a step finalized, zeroGrad() not yet called
  bool finalize_failed_ = false;  // a finalize() threw: its peers may be anywhere, so no barrier at destruction
  std::unique_ptr<CommHook> hook_;
  std::vector<Param> params_;      // requires_grad parameters in registration order
  std::vector<std::pair<std::string, at::Tensor>> frozen_;  // the others: compared by checkReplicas()
  std::vector<std::pair<std::string, at::Tensor>> registered_;  // every parameter at construction, in order
  std::vector<at::Tensor> buffers_;  // the module's buffers, broadcast by finalize() (broadcast_buffers)
  std::vector<at::Tensor> shared_state_;  // what shareOnHost() returned: made private again by unshare()
  // Where the shared tables and shareOnHost()'s tensors went: huge pages from the host's pool or not (the pool
  // as it was before the first of them).
  detail::HugePageTally huge_pages_;
  size_t huge_pages_asked_by_tables_ = 0;
  std::vector<size_t> dense_;      // indices into params_
  std::vector<size_t> sparse_;
  std::vector<size_t> sparse_sync_order_;  // sparse_ reversed: the tables' order in the sparse sync
  std::vector<size_t> bucket_order_;  // positions in dense_ the current buckets were built from
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;

  std::mutex mu_;
  // Guarded by mu_ while a backward may run (a bucket's work: see launchInOrder):
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;  // the first bucket not yet taken for launch
  // Handing buckets to the CommHook happens outside mu_ (it is user code), in order:
  std::mutex launch_mu_;
  std::condition_variable launch_cv_;
  size_t launched_ = 0;                // guarded by launch_mu_: buckets before it are handed over
  size_t dense_bytes_ = 0;             // guarded by launch_mu_
  std::exception_ptr launch_failure_;  // guarded by launch_mu_: the first hook that threw this iteration
  std::vector<size_t> ready_order_;
  bool record_order_ = true;
  int64_t slot_copies_ = 0;

  bool no_sync_ = false;
  bool synchronized_backward_ = false;  // a gradient arrived outside noSync() since the last finalize()
  bool gradient_since_finalize_ = false;  // any gradient arrived (noSync() or not) since the last finalize()
  bool warned_no_backward_ = false;
  bool first_iteration_ = true;
  // Some dense parameter has had no gradient on any rank yet (settleNeverUsed). The same on every rank.
  bool seeking_never_used_ = true;
  DdpStats stats_;
};

DistributedDataParallel::DistributedDataParallel(torch::nn::Module& module, comm::Communicator& comm,
                                                 DdpOptions options)
    : impl_(std::make_unique<Impl>(module, comm, std::move(options))) {}

DistributedDataParallel::~DistributedDataParallel() = default;

void DistributedDataParallel::finalize() {
  try {
    impl_->finalize();
  } catch (...) {
    impl_->finalize_failed_ = true;  // the destructor then waits for no other rank
    throw;
  }
}

DistributedDataParallel::NoSyncGuard::NoSyncGuard(DistributedDataParallel& ddp)
    : ddp_(ddp), previous_(ddp.impl_->no_sync_) {
  ddp_.impl_->no_sync_ = true;
}
DistributedDataParallel::NoSyncGuard::~NoSyncGuard() { ddp_.impl_->no_sync_ = previous_; }

void DistributedDataParallel::zeroGrad() { impl_->zeroGrad(); }

bool DistributedDataParallel::sharesSparseParameters() const { return impl_->sharesSparseParameters(); }

std::string DistributedDataParallel::sharedMemoryPagesReport() const {
  if (impl_->comm_.rank() != 0 || !impl_->options_.huge_pages) return "";
  if (impl_->huge_pages_.asked() == impl_->huge_pages_asked_by_tables_) return "";  // the constructor said it
  return impl_->huge_pages_.report("tensors the ranks share (sparse tables and the state shared beside them)");
}

std::vector<std::string> DistributedDataParallel::sharedParameterNames() const {
  std::vector<std::string> names;
  if (sharesSparseParameters()) {
    for (size_t i : impl_->sparse_) names.push_back(impl_->params_[i].name);
  }
  return names;
}

at::Tensor DistributedDataParallel::shareOnHost(const at::Tensor& tensor, const std::string& what) {
  RT_CHECK(sharesSparseParameters(), "DistributedDataParallel::shareOnHost: the sparse tables are not shared (",
           "ddp.sparse_sync is ", toString(impl_->options_.sparse_sync), ")");
  bool used = false;
  std::string why_not_huge;
  at::Tensor shared =
      detail::shareOnHost(impl_->comm_, tensor, what, {impl_->options_.huge_pages, &used, &why_not_huge});
  impl_->shared_state_.push_back(shared);
  impl_->huge_pages_.add(static_cast<size_t>(tensor.numel()) * tensor.element_size(), used, why_not_huge);
  return shared;
}

void DistributedDataParallel::setCommHook(std::unique_ptr<CommHook> hook) {
  RT_CHECK(hook != nullptr, "setCommHook needs a hook");
  impl_->hook_ = std::move(hook);
}

void DistributedDataParallel::checkReplicas() {
  // Labelled as finalize()'s own are (see there): a rank still sending buckets meets a labelled collective.
  const comm::CollectiveTag own(comm::ddpTag(impl_->users_.id(), impl_->stats_.steps, comm::kDdpFinalizeTag));
  impl_->checkReplicas();
}
void DistributedDataParallel::broadcastState() { impl_->broadcastState(); }
const DdpStats& DistributedDataParallel::stats() const { return impl_->stats_; }
int DistributedDataParallel::rank() const { return impl_->comm_.rank(); }
int DistributedDataParallel::worldSize() const { return impl_->comm_.size(); }

std::string DdpStats::toString() const {
  std::ostringstream out;
  out << "ddp: " << buckets.size() << " dense bucket(s), " << sparse_parameters << " sparse parameter(s), "
      << steps << " step(s), " << rebuilds << " rebuild(s)";
  if (steps_without_backward > 0) out << ", " << steps_without_backward << " step(s) without a backward";
  out << "\n";
  for (const auto& b : buckets) {
    out << "  bucket " << b.index << ": " << b.bytes << " bytes, "
        << c10::toString(static_cast<c10::ScalarType>(b.dtype)) << (b.device >= 0 ? " cuda" : " cpu") << ", "
        << b.parameters.size() << " param(s) [";
    for (size_t i = 0; i < b.parameters.size(); ++i) {
      if (i == 4) {
        out << ", ...";
        break;
      }
      out << (i ? ", " : "") << b.parameters[i];
    }
    out << "], last allreduce " << ms(b.last_allreduce) << "\n";
  }
  out << "  last step: dense " << dense_bytes_sent << " B, sparse sent " << sparse_bytes_sent << " B, received "
      << sparse_bytes_received << " B, rows " << sparse_rows_local << " local / " << sparse_rows_global
      << " global\n";
  out << "  last step: allreduce " << ms(allreduce_total) << ", finalize waited " << ms(finalize_wait)
      << ", sparse sync " << ms(sparse_sync_time) << " (exchange " << ms(sparse_exchange_time)
      << "; besides, overlapped with backward " << ms(sparse_overlapped_time) << ")\n";
  if (steps > 0) {
    out << "  mean per step: allreduce " << ms(sum_allreduce_total / steps) << ", finalize waited "
        << ms(sum_finalize_wait / steps) << ", sparse sync " << ms(sum_sparse_sync_time / steps) << " (exchange "
        << ms(sum_sparse_exchange_time / steps) << "; besides, overlapped with backward "
        << ms(sum_sparse_overlapped_time / steps) << "), dense "
        << sum_dense_bytes_sent / steps << " B, sparse " << sum_sparse_bytes_sent / steps << " B\n";
  }
  if (!unused_parameters.empty()) {
    out << "  unused parameters (first iteration):";
    for (const auto& n : unused_parameters) out << " " << n;
    out << "\n";
  }
  return out.str();
}

}  // namespace ringtrain::ddp
