#include "communicator_base.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <sstream>

#include "kept_for_good.h"
#include "ringtrain/comm/collective_tag.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {

const char* toString(OpKind kind) {
  switch (kind) {
    case OpKind::kAllreduce: return "allreduce";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kAllgather: return "allgather";
    case OpKind::kAllgatherBytes: return "allgatherBytes";
    case OpKind::kAllToAllBytes: return "allToAllBytes";
    case OpKind::kBarrier: return "barrier";
  }
  return "unknown";
}

std::string describe(const CollectiveDescriptor& d) {
  std::ostringstream out;
  out << toString(d.kind);
  switch (d.kind) {
    case OpKind::kAllreduce:
      out << "(" << toString(d.dtype) << ", " << d.count << " elements, " << toString(d.op) << ")";
      break;
    case OpKind::kBroadcast:
      out << "(" << toString(d.dtype) << ", " << d.count << " elements, root " << d.root << ")";
      break;
    case OpKind::kAllgather: out << "(" << toString(d.dtype) << ", " << d.count << " elements)"; break;
    default: out << "()"; break;
  }
  if (d.tag() != 0) out << " [" << describeTag(d.tag()) << "]";
  return out.str();
}

std::string findDisagreement(const std::vector<CollectiveDescriptor>& all) {
  const CollectiveDescriptor& first = all.at(0);
  for (size_t r = 1; r < all.size(); ++r) {
    const CollectiveDescriptor& d = all[r];
    if (d.sequence == first.sequence && d.kind == first.kind && d.count == first.count &&
        d.dtype == first.dtype && d.root == first.root && d.op == first.op && d.tag() == first.tag()) {
      continue;
    }
    std::ostringstream out;
    out << "collective mismatch: rank " << r << " called " << describe(d) << " as collective #" << d.sequence
        << " but rank 0 called " << describe(first) << " as collective #" << first.sequence
        << " (every rank must issue the same collectives in the same order";
    if (const std::string hint = tagMismatchHint(d.tag(), first.tag()); !hint.empty()) {
      out << "; " << hint << " (see the rules in ringtrain/ddp/distributed_data_parallel.h)";
    }
    out << ")";
    return out.str();
  }
  return {};
}

std::string CommShared::breakWith(const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_.empty()) broken_ = message;
  return broken_;
}

std::string CommShared::brokenMessage() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

std::string timeoutMessage(CommShared& shared, const CollectiveDescriptor& d, std::chrono::milliseconds waited) {
  std::ostringstream out;
  out << shared.backend << " " << describe(d) << " (collective #" << d.sequence << ") did not complete within "
      << static_cast<double>(waited.count()) / 1000.0 << " s on rank " << shared.rank << ": "
      << shared.board.describeMissing(d.sequence);
  if (shared.in_backend) {
    out << "; the communication thread is still blocked inside " << shared.backend
        << ", so this communicator is unusable: end the process";
  }
  return out.str();
}

void waitForAllRanks(dist::Store& store, int rank, int size, std::chrono::milliseconds timeout,
                     const std::string& what) {
  store.set("joined/" + std::to_string(rank), dist::toBytes("1"));
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back("joined/" + std::to_string(r));
  try {
    store.wait(keys, timeout);
  } catch (const TimeoutError&) {
    std::ostringstream out;
    int missing = 0;
    for (int r = 0; r < size; ++r) {
      if (store.check({keys[r]})) continue;
      out << (missing++ ? ", " : "") << r;
    }
    RT_THROW(TimeoutError, what, ": ", (missing == 1 ? "rank " : "ranks "), out.str(), " did not join within ",
             static_cast<double>(timeout.count()) / 1000.0, " s (rank ", rank, " of ", size, " waited)");
  }
}

// ---------------------------------------------------------------------------------------------------------

ThreadWork::ThreadWork(std::shared_ptr<CommShared> shared, CollectiveDescriptor descriptor)
    : shared_(std::move(shared)), descriptor_(descriptor) {}

void ThreadWork::wait(std::chrono::milliseconds timeout) {
  // The poll is part of the wait, not added to it.
  const auto start = std::chrono::steady_clock::now();
  spinUntil([this] { return done_flag_.load(std::memory_order_acquire); },
            pollBudget(std::chrono::nanoseconds(shared_->spin_ns.load()), timeout));
  const auto polled = std::chrono::ceil<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  const auto left = timeout > polled ? timeout - polled : std::chrono::milliseconds::zero();
  bool started;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (done_cv_.wait_for(lock, left, [&] { return done_; })) {
      if (error_) std::rethrow_exception(error_);
      return;
    }
    started = started_ != std::chrono::steady_clock::time_point{};
  }
  std::string message;
  if (started) {
    message = timeoutMessage(*shared_, descriptor_, timeout);
  } else {
    std::ostringstream out;
    out << shared_->backend << " " << describe(descriptor_) << " (collective #" << descriptor_.sequence
        << ") did not start within " << static_cast<double>(timeout.count()) / 1000.0 << " s on rank "
        << shared_->rank << ": the communication thread is still busy with an earlier operation";
    message = out.str();
  }
  shared_->breakWith(message);
  RT_THROW(TimeoutError, message);
}

bool ThreadWork::isCompleted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

std::chrono::nanoseconds ThreadWork::duration() const {
  std::lock_guard<std::mutex> lock(mu_);
  return duration_;
}

void ThreadWork::start() {
  std::lock_guard<std::mutex> lock(mu_);
  started_ = std::chrono::steady_clock::now();
}

void ThreadWork::finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    duration_ = std::chrono::steady_clock::now() - started_;
    done_ = true;
  }
  done_flag_.store(true, std::memory_order_release);
  done_cv_.notify_all();
}

void ThreadWork::fail(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    shared_->breakWith(e.what());
  } catch (...) {
    shared_->breakWith("unknown error on the communication thread");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = error;
    done_ = true;
  }
  done_flag_.store(true, std::memory_order_release);
  done_cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------------------

CommunicatorBase::CommunicatorBase(int rank, int size, const config::CommOptions& options,
                                   std::unique_ptr<dist::Store> store, std::string backend)
    : rank_(rank),
      size_(size),
      timeout_(std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000.0))),
      check_collectives_(options.check_collectives),
      spin_us_(options.spin_us),
      shared_(std::make_shared<CommShared>(std::move(store), rank, size, std::move(backend))),
      queue_(std::make_shared<Queue>()) {
  RT_CHECK_T(ConfigError, size >= 1 && rank >= 0 && rank < size, "bad rank ", rank, " of world size ", size);
  RT_CHECK_T(ConfigError, timeout_.count() > 0, "comm.timeout_s must be > 0 (got ", options.timeout_s, ")");
  thread_ = std::thread([queue = queue_] { loop(queue); });
}

CommunicatorBase::~CommunicatorBase() {
  stopThread();
  shared_->board.stopListening();  // the board may outlive this (a Work holds it); the job's store may not
}

void CommunicatorBase::setUpPeerMemory(bool wanted) {
  peer_memory_ = PeerMemory::agree(store(), rank_, size_, timeout_, wanted);
  // Ranks known to share this host: all of them when same-host copies work, else unknown.
  const std::chrono::nanoseconds spin = chooseSpin(spin_us_, peer_memory_.enabled() ? size_ : 0);
  peer_memory_.setSpin(spin);
  shared_->spin_ns = spin.count();
  queue_->spin_ns = spin.count();
  if (size_ > 1) {
    debug("{}: same-host copy {}{}; waits poll {} us before they sleep", backendName(),
          peer_memory_.enabled() ? "on" : "off: ", peer_memory_.reason(),
          std::chrono::duration_cast<std::chrono::microseconds>(spin).count());
  }
}

bool CommunicatorBase::stopThread() {
  if (!thread_.joinable()) return true;
  std::deque<std::pair<std::shared_ptr<ThreadWork>, std::function<void()>>> dropped;
  bool stuck;
  {
    std::unique_lock<std::mutex> lock(queue_->mu);
    queue_->stop = true;
    queue_->stopping = true;
    dropped.swap(queue_->tasks);
    queue_->queued = 0;
    queue_->cv.notify_all();
    // A running task waiting on a same-host notice gives up at once. One inside the backend ends by itself
    // (backend timeouts are set to comm.timeout_s) unless the backend has none (MPI): then the thread is
    // left behind.
    peer_memory_.abandonWaits();
    stuck = !queue_->cv.wait_for(lock, timeout_ + std::chrono::seconds(2), [&] { return !queue_->busy; });
  }
  for (auto& task : dropped) {
    task.first->fail(std::make_exception_ptr(CommError("communicator destroyed before the collective ran")));
  }
  if (stuck) {
    ringtrain::error("{} communicator: the communication thread is stuck inside the backend; leaving it behind",
                     shared_->backend);
    thread_.detach();
    return false;
  }
  thread_.join();
  return true;
}

void CommunicatorBase::loop(std::shared_ptr<Queue> queue) {
  std::unique_lock<std::mutex> lock(queue->mu);
  while (true) {
    // Idle where waits poll long: poll a while (at most kIdleSpin), so that a step's next collective finds
    // this thread running. Where they poll short (CPUs shared by several ranks), sleep at once, as before.
    const std::chrono::nanoseconds spin(queue->spin_ns.load());
    if (spin > kShortSpin && !queue->stop && queue->tasks.empty()) {
      lock.unlock();
      spinUntil([&] { return queue->queued.load(std::memory_order_acquire) != 0 || queue->stopping.load(); },
                std::min<std::chrono::nanoseconds>(spin, kIdleSpin));
      lock.lock();
    }
    queue->cv.wait(lock, [&] { return queue->stop || !queue->tasks.empty(); });
    if (queue->tasks.empty()) return;  // stop requested and nothing left
    auto task = std::move(queue->tasks.front());
    queue->tasks.pop_front();
    queue->queued = queue->tasks.size();
    queue->busy = true;
    lock.unlock();
    task.first->start();
    try {
      task.second();
      task.first->finish();
    } catch (...) {
      task.first->fail(std::current_exception());
    }
    task = {};
    lock.lock();
    queue->busy = false;
    queue->cv.notify_all();
  }
}

void CommunicatorBase::requireAgreement(const std::vector<CollectiveDescriptor>& all) {
  const std::string mismatch = findDisagreement(all);
  if (!mismatch.empty()) RT_THROW(CommError, mismatch);
}

WorkPtr CommunicatorBase::enqueue(CollectiveDescriptor descriptor, std::function<void()> run) {
  descriptor.sequence = next_sequence_++;
  descriptor.setTag(CollectiveTag::current());  // the issuing thread's: enqueue runs on it
  auto work = std::make_shared<ThreadWork>(shared_, descriptor);
  const std::string broken = shared_->brokenMessage();
  if (!broken.empty()) {
    work->fail(std::make_exception_ptr(
        CommError(std::string(toString(descriptor.kind)) + " on a broken communicator; first failure: " + broken)));
    return work;
  }
  {
    std::lock_guard<std::mutex> lock(queue_->mu);
    RT_CHECK_T(CommError, !queue_->stop, "collective issued on a communicator being destroyed");
    queue_->tasks.emplace_back(work, [this, descriptor, run = std::move(run)] { execute(descriptor, run); });
    queue_->queued = queue_->tasks.size();
  }
  queue_->cv.notify_all();
  return work;
}

void CommunicatorBase::execute(const CollectiveDescriptor& descriptor, const std::function<void()>& run) {
  const std::string broken = shared_->brokenMessage();
  if (!broken.empty()) {
    RT_THROW(CommError, toString(descriptor.kind), " on a broken communicator; first failure: ", broken);
  }
  if (size_ == 1) {
    inBackend(run);
    return;
  }
  shared_->board.arrive(descriptor.sequence);
  try {
    const bool same_host = peer_memory_.enabled();
    const bool checked_inside =
        descriptor.kind == OpKind::kAllgatherBytes && checksOwnDescriptors() && !same_host;
    if (check_collectives_ && !checked_inside) {
      std::vector<CollectiveDescriptor> all(size_);
      if (same_host) {
        try {
          exchangeDescriptorsByNotices(descriptor, all);
        } catch (const TimeoutError&) {
          throw;  // diagnosed below, with the ranks that did not arrive
        } catch (const CommError& e) {
          RT_THROW(CommError, shared_->backend, " ", describe(descriptor), " (collective #", descriptor.sequence,
                   ") failed on rank ", rank_, " while checking that every rank calls it: ", e.what());
        }
      } else {
        inBackend([&] { exchangeDescriptors(descriptor, all); });
      }
      requireAgreement(all);
    }
    running_ = descriptor;
    inBackend(run);
  } catch (const TimeoutError& e) {
    // A wait inside (the same-host notices, the ring's point-to-point) ran out: say which ranks had not
    // arrived, as for a backend timeout, and keep what was being waited for.
    RT_THROW(TimeoutError, timeoutMessage(*shared_, descriptor, timeout_), " [", e.what(), "]");
  } catch (const CommError& e) {
    // A broken connection is most often a peer that failed: the peer's own words say why, or its process's
    // state (killed outright, it said nothing).
    const std::string failed = shared_->board.describeBrokenPeers(e.what());
    if (failed.empty()) throw;
    RT_THROW(CommError, e.what(), "; ", failed);
  } catch (const std::exception& e) {
    if (isBackendTimeout(e)) RT_THROW(TimeoutError, timeoutMessage(*shared_, descriptor, timeout_));
    const std::string failed = shared_->board.describeBrokenPeers(e.what());
    RT_THROW(CommError, shared_->backend, " ", describe(descriptor), " (collective #", descriptor.sequence,
             ") failed on rank ", rank_, ": ", e.what(), failed.empty() ? "" : "; ", failed);
  }
}

// ---------------------------------------------------------------------------------------------------------

namespace {
void checkBuffer(const Buffer& b, const char* what) {
  RT_CHECK_T(CommError, b.count == 0 || b.data != nullptr, what, ": null data with ", b.count, " elements");
}
}  // namespace

namespace {
// Runs `body`; when it fails, what the operation reads from or writes into (the owners in `keep`) is kept
// for good (kept_for_good.h): a failed collective may leave a send or receive posted on it.
template <typename Body>
void keepingOnFailure(std::initializer_list<std::shared_ptr<const void>> keep, Body&& body) {
  try {
    body();
  } catch (...) {
    for (const auto& owner : keep) keepForGood(owner);
    throw;
  }
}
}  // namespace

WorkPtr CommunicatorBase::allreduceAsync(Buffer buffer, ReduceOp op) {
  checkBuffer(buffer, "allreduce");
  CollectiveDescriptor d;
  d.kind = OpKind::kAllreduce;
  d.count = buffer.count;
  d.dtype = buffer.dtype;
  d.op = op;
  return enqueue(d, [this, buffer, op] {
    if (buffer.count == 0 || (size_ == 1 && !runsSingleRank())) return;
    keepingOnFailure({buffer.owner}, [&] {
      if (algorithm_ && !buffer.device.isCuda()) {
        algorithm_(*this, buffer, op == ReduceOp::kAverage ? ReduceOp::kSum : op);
        if (op == ReduceOp::kAverage) finishAverage(buffer.data, buffer.count, buffer.dtype, size_);
      } else {
        runAllreduce(buffer, op);
      }
    });
  });
}

WorkPtr CommunicatorBase::broadcastAsync(Buffer buffer, int root) {
  checkBuffer(buffer, "broadcast");
  RT_CHECK_T(CommError, root >= 0 && root < size_, "broadcast root ", root, " outside world size ", size_);
  RT_CHECK_T(CommError, root <= INT16_MAX, "broadcast root ", root, ": roots past ", INT16_MAX, " are not supported");
  CollectiveDescriptor d;
  d.kind = OpKind::kBroadcast;
  d.count = buffer.count;
  d.dtype = buffer.dtype;
  d.root = static_cast<int16_t>(root);
  return enqueue(d, [this, buffer, root] {
    if (buffer.count == 0 || (size_ == 1 && !runsSingleRank())) return;
    keepingOnFailure({buffer.owner}, [&] { runBroadcast(buffer, root); });
  });
}

WorkPtr CommunicatorBase::allgatherAsync(Buffer send, Buffer recv) {
  checkBuffer(send, "allgather");
  checkBuffer(recv, "allgather");
  RT_CHECK_T(CommError, send.dtype == recv.dtype, "allgather: send is ", toString(send.dtype), " but recv is ",
             toString(recv.dtype));
  RT_CHECK_T(CommError, recv.count == send.count * static_cast<size_t>(size_), "allgather: recv holds ",
             recv.count, " elements, needs world size ", size_, " x ", send.count);
  CollectiveDescriptor d;
  d.kind = OpKind::kAllgather;
  d.count = send.count;
  d.dtype = send.dtype;
  return enqueue(d, [this, send, recv] {
    if (send.count == 0) return;
    if (size_ == 1 && !runsSingleRank()) {
      if (recv.data != send.data) std::memmove(recv.data, send.data, send.bytes());
      return;
    }
    keepingOnFailure({send.owner, recv.owner}, [&] { runAllgather(send, recv); });
  });
}

std::vector<std::vector<uint8_t>> CommunicatorBase::allgatherBytes(const std::vector<uint8_t>& mine) {
  // Shared, not referenced: after a timeout the task may still finish after this frame is gone.
  auto exchange = std::make_shared<ByteExchange>();
  exchange->mine = mine;
  allgatherBytesInto(exchange);
  exchange->all[rank_] = std::move(exchange->mine);  // the task is done with it once the wait returned
  return std::move(exchange->all);
}

void CommunicatorBase::allgatherBytesInto(const std::shared_ptr<ByteExchange>& exchange) {
  CollectiveDescriptor d;
  d.kind = OpKind::kAllgatherBytes;
  enqueue(d, [this, exchange] {
    ByteExchange& ex = *exchange;
    ex.all.resize(size_);
    // A failed exchange is kept for good: a backend's send that timed out may still read ex.mine (MPI cannot
    // cancel it), and a peer may still be copying what this rank offered on the same-host path.
    keepingOnFailure({exchange}, [&] {
      if (size_ > 1 && peer_memory_.enabled()) {
        exchangeByCopies(std::vector<const std::vector<uint8_t>*>(size_, &ex.mine), ex.all);
      } else if (size_ > 1) {
        ex.all = runAllgatherBytes(ex.mine);
      }
    });
    ex.all[rank_].clear();
  })->wait(timeout_);
}

std::vector<std::vector<uint8_t>> CommunicatorBase::allToAllBytes(const std::vector<std::vector<uint8_t>>& send) {
  // Shared, not referenced: after a timeout the task may still finish after this frame is gone.
  auto exchange = std::make_shared<AllToAllExchange>();
  exchange->send = send;
  allToAllBytesInto(exchange);
  exchange->received[rank_] = std::move(exchange->send[rank_]);  // the task is done with it
  return std::move(exchange->received);
}

void CommunicatorBase::allToAllBytesInto(const std::shared_ptr<AllToAllExchange>& exchange) {
  RT_CHECK_T(CommError, exchange->send.size() == static_cast<size_t>(size_), "allToAllBytes: ",
             exchange->send.size(), " buffers for world size ", size_);
  CollectiveDescriptor d;
  d.kind = OpKind::kAllToAllBytes;
  enqueue(d, [this, exchange] {
    AllToAllExchange& ex = *exchange;
    ex.received.resize(size_);
    keepingOnFailure({exchange}, [&] {
      if (size_ > 1 && peer_memory_.enabled()) {
        std::vector<const std::vector<uint8_t>*> offer;
        for (const auto& bytes : ex.send) offer.push_back(&bytes);
        exchangeByCopies(offer, ex.received);
      } else if (size_ > 1) {
        ex.received = runAllToAllBytes(ex.send);
      }
    });
    ex.received[rank_].clear();
  })->wait(timeout_);
}

// Marks the first notice of a collective's descriptor, checked on arrival so that ranks that disagree on
// what they are doing fail instead of misreading each other (the byte collectives' markers are in
// exchangeOffers).
namespace {
constexpr uint64_t kDescriptorMarker = uint64_t{0xD1} << 56;
}  // namespace

void CommunicatorBase::exchangeDescriptorsByNotices(const CollectiveDescriptor& mine,
                                                    std::vector<CollectiveDescriptor>& all) {
  // 24 bytes in two notices: {marker, sequence}, {count, the last 8 bytes}.
  static_assert(offsetof(CollectiveDescriptor, sequence) == 0 && offsetof(CollectiveDescriptor, count) == 8);
  uint64_t tail = 0;
  std::memcpy(&tail, reinterpret_cast<const uint8_t*>(&mine) + 16, 8);
  for (int i = 1; i < size_; ++i) {
    const int peer = (rank_ + i) % size_;
    peer_memory_.post(peer, PeerNotice{kDescriptorMarker, mine.sequence}, timeout_);
    peer_memory_.post(peer, PeerNotice{mine.count, tail}, timeout_);
  }
  all[rank_] = mine;
  for (int i = 1; i < size_; ++i) {
    const int peer = (rank_ + size_ - i) % size_;
    const PeerNotice head = peer_memory_.take(peer, timeout_);
    RT_CHECK_T(CommError, head.message == kDescriptorMarker, describe(mine), " (collective #", mine.sequence,
               ") on rank ", rank_, ": rank ", peer, " is out of step (its notice is not a collective's start)");
    const PeerNotice rest = peer_memory_.take(peer, timeout_);
    CollectiveDescriptor& d = all[peer];
    d.sequence = head.value;
    d.count = rest.message;
    std::memcpy(reinterpret_cast<uint8_t*>(&d) + 16, &rest.value, 8);
  }
}

void CommunicatorBase::exchangeByCopies(const std::vector<const std::vector<uint8_t>*>& offer,
                                        std::vector<std::vector<uint8_t>>& result) {
  try {
    exchangeOffers(
        *this, [&](int peer) { return PeerOffer{offer[peer]->data(), offer[peer]->size()}; },
        [&](int peer, size_t bytes) {
          result[peer].resize(bytes);
          return result[peer].data();
        },
        timeout_);
  } catch (const TimeoutError&) {
    throw;  // execute() names the ranks that did not arrive
  } catch (const CommError& e) {
    RT_THROW(CommError, shared_->backend, " ", describe(running_), " (collective #", running_.sequence,
             ") failed on rank ", rank_, ": ", e.what());
  }
}

void CommunicatorBase::barrier() {
  CollectiveDescriptor d;
  d.kind = OpKind::kBarrier;
  enqueue(d, [this] {
    // On one host the agreement check already was a barrier: every rank posted its descriptor to every
    // other and took theirs before getting here.
    const bool already_met = peer_memory_.enabled() && check_collectives_;
    if (size_ > 1 && !already_met) runBarrier();
  })->wait(timeout_);
}

}  // namespace ringtrain::comm
