// The Gloo backend (tcp transport): collectives are Gloo's own algorithms, point-to-point is Gloo's unbound
// buffers. Rendezvous goes through ringtrain's Store via GlooStoreAdapter. Gloo's algorithms block, so
// they run on the communication thread; the tcp transport runs its own I/O thread underneath.
//
// Slots (Gloo's message matching keys, prefix in the top byte) keep the traffic kinds apart: the
// collectives use Gloo's prefixes with one tag each (they run one at a time, in the same order on every
// rank, and Gloo matches per pair and slot in posting order); user and ring point-to-point use kP2pPrefix
// with the caller's tag; the descriptor check and allToAllBytes use prefixes of their own.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>

#include "backends.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {
namespace {

constexpr uint8_t kP2pPrefix = 0x40;
constexpr uint8_t kDescriptorPrefix = 0x41;
constexpr uint8_t kAllToAllPrefix = 0x42;
constexpr uint8_t kBytesPrefix = 0x43;
// The byte collectives send at most this much per Gloo message (as the ring's segments): Gloo sizes a
// socket's send buffer to the largest message it has sent (up to 32 MiB), and the receiver can take the
// first segments while later ones are still being written.
constexpr size_t kBytesSegment = 256 << 10;
// kMaxBytesMessage bounds a length a peer announces in allgatherBytes.
constexpr uint64_t kMaxBytesMessage = uint64_t{1} << 40;

// allgatherBytes posts receives for `current()` bytes per peer before it knows the lengths: a quarter
// more than the longest frame of the last kWindow exchanges, in whole segments, between one segment and
// kMax. Every rank observes the same lengths in the same order, so all hold the same capacity.
class BytesCapacity {
 public:
  static constexpr size_t kWindow = 16;
  static constexpr size_t kMax = 64 << 20;
  size_t current() const {
    const size_t longest = *std::max_element(recent_.begin(), recent_.end());
    const size_t wanted = std::min(kMax, longest + longest / 4);
    return std::max<size_t>(1, (wanted + kBytesSegment - 1) / kBytesSegment) * kBytesSegment;
  }
  void observe(size_t frame_bytes) { recent_[next_++ % kWindow] = frame_bytes; }

 private:
  std::array<size_t, kWindow> recent_{};
  size_t next_ = 0;
};
constexpr uint32_t kCollectiveTag = 0;

uint64_t slot(uint8_t prefix, uint32_t tag) { return (static_cast<uint64_t>(prefix) << 56) | tag; }

// gloo::rendezvous::Store over ringtrain's Store: every wait is bounded by comm.timeout_s.
class GlooStoreAdapter final : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(dist::Store& store, std::chrono::milliseconds timeout) : store_(store), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    store_.set(key, dist::Bytes(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    const dist::Bytes value = store_.get(key, timeout_);
    return std::vector<char>(value.begin(), value.end());
  }
  void wait(const std::vector<std::string>& keys) override { store_.wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    store_.wait(keys, timeout);
  }

 private:
  dist::Store& store_;
  const std::chrono::milliseconds timeout_;
};

bool isGlooTimeout(const std::exception& e) {
  return dynamic_cast<const gloo::IoException*>(&e) != nullptr && std::strstr(e.what(), "Timed out") != nullptr;
}

// A pending send or recv on an unbound buffer. Waiting is idempotent and thread-safe.
class GlooP2pWork final : public PolledWork {
 public:
  GlooP2pWork(std::unique_ptr<gloo::transport::UnboundBuffer> buffer, bool is_send, int peer, uint32_t tag,
              std::chrono::milliseconds default_timeout)
      : buffer_(std::move(buffer)),
        is_send_(is_send),
        peer_(peer),
        tag_(tag),
        default_timeout_(default_timeout),
        started_(std::chrono::steady_clock::now()) {}

  ~GlooP2pWork() override {
    // Gloo must not be left holding a pending operation on freed memory.
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_ && buffer_) {
      try {
        waitLocked(default_timeout_);
      } catch (const std::exception& e) {
        ringtrain::warn("gloo: dropped an unfinished p2p operation: {}", e.what());
      }
    }
  }

 private:
  void waitLocked(std::chrono::milliseconds timeout) override {
    if (done_) {
      if (error_) std::rethrow_exception(error_);
      return;
    }
    if (!buffer_) return;  // zero bytes: nothing was posted
    try {
      const bool completed = is_send_ ? buffer_->waitSend(timeout) : buffer_->waitRecv(timeout);
      RT_CHECK_T(CommError, completed, "gloo ", what(), " was aborted");
    } catch (const gloo::IoException& e) {
      std::exception_ptr error;
      if (std::strstr(e.what(), "Timed out") != nullptr) {
        error = std::make_exception_ptr(TimeoutError(detail::concat(
            "gloo ", what(), " did not complete within ", static_cast<double>(timeout.count()) / 1000.0,
            " s (rank ", peer_, " did not ", is_send_ ? "receive" : "send", " it)")));
      } else {
        error = std::make_exception_ptr(CommError(detail::concat("gloo ", what(), " failed: ", e.what())));
      }
      // A timed-out wait may be retried; a failed transfer may not.
      if (std::strstr(e.what(), "Timed out") == nullptr) {
        done_ = true;
        error_ = error;
      }
      std::rethrow_exception(error);
    }
    done_ = true;
    duration_ = std::chrono::steady_clock::now() - started_;
  }
  std::string what() const {
    return detail::concat(is_send_ ? "send of " : "recv of ", buffer_ ? buffer_->size : 0, " bytes ",
                          is_send_ ? "to" : "from", " rank ", peer_, " (tag ", tag_, ")");
  }

  std::unique_ptr<gloo::transport::UnboundBuffer> buffer_;
  const bool is_send_;
  const int peer_;
  const uint32_t tag_;
  const std::chrono::milliseconds default_timeout_;
  const std::chrono::steady_clock::time_point started_;
  std::exception_ptr error_;               // guarded by mu_
};

template <typename T>
void setAllreduceBuffers(gloo::AllreduceOptions& opts, const Buffer& b) {
  opts.setOutput(static_cast<T*>(b.data), b.count);
}

class GlooCommunicator final : public CommunicatorBase {
 public:
  GlooCommunicator(const config::CommOptions& options, int rank, int size, const std::string& hostname,
                   std::unique_ptr<dist::Store> store)
      : CommunicatorBase(rank, size, options, std::move(store), "gloo") {
    waitForAllRanks(this->store(), rank, size, timeout(), "gloo rendezvous");
    gloo::transport::tcp::attr attr;
    attr.hostname = hostname;
    device_ = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(timeout());
    GlooStoreAdapter adapter(this->store(), timeout());
    try {
      context->connectFullMesh(adapter, device_);
    } catch (const ringtrain::Error&) {
      throw;
    } catch (const std::exception& e) {
      RT_THROW(CommError, "gloo rendezvous failed on rank ", rank, " of ", size, " (host ", hostname, "): ",
               e.what());
    }
    context_ = std::move(context);
    setUpPeerMemory(options.same_host_copy);
  }

  ~GlooCommunicator() override { stopThread(); }

  WorkPtr sendAsync(const void* data, size_t bytes, int peer, uint32_t tag) override {
    return postP2p(const_cast<void*>(data), bytes, peer, tag, true);
  }
  WorkPtr recvAsync(void* data, size_t bytes, int peer, uint32_t tag) override {
    return postP2p(data, bytes, peer, tag, false);
  }

 protected:
  void runAllreduce(Buffer buffer, ReduceOp op) override {
    requireHost(buffer, "allreduce");
    gloo::AllreduceOptions opts(context_);
    switch (buffer.dtype) {
      case DataType::kFloat32: setAllreduceBuffers<float>(opts, buffer); break;
      case DataType::kFloat64: setAllreduceBuffers<double>(opts, buffer); break;
      case DataType::kInt64: setAllreduceBuffers<int64_t>(opts, buffer); break;
      case DataType::kInt32: setAllreduceBuffers<int32_t>(opts, buffer); break;
      case DataType::kUInt8: setAllreduceBuffers<uint8_t>(opts, buffer); break;
      case DataType::kFloat16:
      case DataType::kBFloat16: setAllreduceBuffers<uint16_t>(opts, buffer); break;
    }
    const DataType dtype = buffer.dtype;
    const ReduceOp reduce = op == ReduceOp::kAverage ? ReduceOp::kSum : op;
    opts.setReduceFunction([dtype, reduce](void* out, const void* a, const void* b, size_t n) {
      reduceTo(out, a, b, n, dtype, reduce);
    });
    opts.setTag(kCollectiveTag);
    opts.setTimeout(timeout());
    gloo::allreduce(opts);
    if (op == ReduceOp::kAverage) finishAverage(buffer.data, buffer.count, buffer.dtype, size());
  }

  void runBroadcast(Buffer buffer, int root) override {
    requireHost(buffer, "broadcast");
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<uint8_t*>(buffer.data), buffer.bytes());
    opts.setRoot(root);
    opts.setTag(kCollectiveTag);
    opts.setTimeout(timeout());
    gloo::broadcast(opts);
  }

  void runAllgather(Buffer send, Buffer recv) override {
    requireHost(send, "allgather");
    requireHost(recv, "allgather");
    gloo::AllgatherOptions opts(context_);
    if (send.data != static_cast<uint8_t*>(recv.data) + rank() * send.bytes()) {
      opts.setInput(static_cast<uint8_t*>(send.data), send.bytes());
    }
    opts.setOutput(static_cast<uint8_t*>(recv.data), recv.bytes());
    opts.setTag(kCollectiveTag);
    opts.setTimeout(timeout());
    gloo::allgather(opts);
  }

  // One round in the common case, instead of an allgather of the lengths followed by allgatherv, and
  // with the agreement check riding along instead of taking a round of its own. Every rank posts, for
  // each peer, the 24-byte descriptor receive (the same message and slot as exchangeDescriptors, so a peer
  // inside another collective's check still matches it) and receives for `bytes_capacity_` bytes, then
  // sends both: the data framed as [uint64 length][payload], in segments (see kBytesSegment). Gloo
  // delivers a message shorter than the posted receive, and every rank sends exactly as many segments as
  // the capacity holds (a one-byte placeholder where its frame has ended), so every posted receive
  // completes. A frame longer than the capacity sends the rest afterwards (a second round: the receiver
  // knows the length by then). Every rank sees every length, so all set the same next capacity.
  std::vector<std::vector<uint8_t>> runAllgatherBytes(const std::vector<uint8_t>& mine) override {
    const int n = size();
    const size_t capacity = bytes_capacity_.current();
    // Descriptors that never arrive read as agreeing: only one that arrived can name a disagreement.
    std::vector<CollectiveDescriptor> descriptors_out(n, runningDescriptor()), descriptors_in(n, runningDescriptor());
    std::unique_ptr<gloo::transport::UnboundBuffer> descriptor_recv, descriptor_send;
    if (checkCollectives()) {
      descriptor_recv = context_->createUnboundBuffer(descriptors_in.data(), n * sizeof(CollectiveDescriptor));
      descriptor_send = context_->createUnboundBuffer(descriptors_out.data(), n * sizeof(CollectiveDescriptor));
      postExchange(*descriptor_recv, *descriptor_send, sizeof(CollectiveDescriptor), kDescriptorPrefix);
    }

    std::vector<uint8_t> frame(sizeof(uint64_t) + mine.size());
    const uint64_t my_length = mine.size();
    std::memcpy(frame.data(), &my_length, sizeof(uint64_t));
    if (!mine.empty()) std::memcpy(frame.data() + sizeof(uint64_t), mine.data(), mine.size());
    // Each peer's frame lands in its result vector; the length header is cut off at the end.
    std::vector<std::vector<uint8_t>> result(n);
    std::vector<Posted> heads;
    const size_t segments = capacity / kBytesSegment;
    const size_t head = std::min(frame.size(), capacity);
    auto send_buf = context_->createUnboundBuffer(frame.data(), frame.size());
    size_t sends = 0;
    std::exception_ptr failure;
    try {
      for (int peer = 0; peer < n; ++peer) {
        if (peer == rank()) continue;
        result[peer].resize(capacity);
        Posted p{context_->createUnboundBuffer(result[peer].data(), capacity)};
        p.recvs = postSegments(*p.buffer, peer, slot(kBytesPrefix, 0), 0, capacity, false);
        heads.push_back(std::move(p));
      }
      for (int peer = 0; peer < n; ++peer) {
        if (peer == rank()) continue;
        size_t posted = postSegments(*send_buf, peer, slot(kBytesPrefix, 0), 0, head, true);
        for (; posted < segments; ++posted) {
          send_buf->send(peer, slot(kBytesPrefix, 0), 0, 1);  // placeholder: the frame ended earlier
        }
        sends += posted;
      }
    } catch (...) {
      failure = std::current_exception();
    }
    if (checkCollectives()) {
      // A disagreeing peer is inside another collective: it may have found the disagreement, failed and
      // closed its connections already, breaking this rank's data operations. The disagreement is the
      // error to report, so settle it before anything else.
      try {
        waitExchange(*descriptor_recv, *descriptor_send);
      } catch (...) {
        if (!failure) failure = std::current_exception();
      }
      requireAgreement(descriptors_in);
    }
    if (failure) std::rethrow_exception(failure);
    waitPosted(heads);

    // Second round for frames longer than the capacity.
    std::vector<uint64_t> lengths(n, 0);
    lengths[rank()] = my_length;
    std::vector<Posted> tails;
    for (int peer = 0; peer < n; ++peer) {
      if (peer == rank()) continue;
      std::memcpy(&lengths[peer], result[peer].data(), sizeof(uint64_t));
      RT_CHECK_T(CommError, lengths[peer] <= kMaxBytesMessage, "gloo allgatherBytes: rank ", peer,
                 " announced ", lengths[peer], " bytes (more than the ", kMaxBytesMessage, " allowed)");
      const size_t total = sizeof(uint64_t) + lengths[peer];
      if (total > capacity) {
        result[peer].resize(total);
        Posted tail{context_->createUnboundBuffer(result[peer].data(), total)};
        tail.recvs = postSegments(*tail.buffer, peer, slot(kBytesPrefix, 1), capacity, total - capacity, false);
        tails.push_back(std::move(tail));
      }
    }
    if (frame.size() > capacity) {
      for (int peer = 0; peer < n; ++peer) {
        if (peer == rank()) continue;
        sends += postSegments(*send_buf, peer, slot(kBytesPrefix, 1), capacity, frame.size() - capacity, true);
      }
    }
    waitPosted(tails);
    for (size_t i = 0; i < sends; ++i) send_buf->waitSend(timeout());

    uint64_t longest = 0;
    for (int r = 0; r < n; ++r) {
      longest = std::max(longest, lengths[r]);
      if (r == rank()) {
        result[r] = mine;
      } else {
        result[r].erase(result[r].begin(), result[r].begin() + sizeof(uint64_t));
        result[r].resize(lengths[r]);
      }
    }
    bytes_capacity_.observe(sizeof(uint64_t) + longest);
    return result;
  }

  std::vector<std::vector<uint8_t>> runAllToAllBytes(const std::vector<std::vector<uint8_t>>& send) override {
    const int n = size();
    std::vector<uint64_t> send_sizes(n), recv_sizes(n);
    for (int r = 0; r < n; ++r) send_sizes[r] = send[r].size();
    exchangeWithPeers(send_sizes.data(), recv_sizes.data(), sizeof(uint64_t), kAllToAllPrefix);
    std::vector<std::vector<uint8_t>> result(n);
    result[rank()] = send[rank()];
    std::vector<Posted> posted;
    for (int peer = 0; peer < n; ++peer) {
      if (peer == rank()) continue;
      result[peer].resize(recv_sizes[peer]);
      if (recv_sizes[peer] > 0) {
        Posted p{context_->createUnboundBuffer(result[peer].data(), recv_sizes[peer])};
        p.recvs = postSegments(*p.buffer, peer, slot(kAllToAllPrefix, 1), 0, recv_sizes[peer], false);
        posted.push_back(std::move(p));
      }
    }
    for (int peer = 0; peer < n; ++peer) {
      if (peer == rank() || send[peer].empty()) continue;
      Posted p{context_->createUnboundBuffer(const_cast<uint8_t*>(send[peer].data()), send[peer].size())};
      p.sends = postSegments(*p.buffer, peer, slot(kAllToAllPrefix, 1), 0, send[peer].size(), true);
      posted.push_back(std::move(p));
    }
    waitPosted(posted);
    return result;
  }

  void runBarrier() override {
    gloo::BarrierOptions opts(context_);
    opts.setTag(kCollectiveTag);
    opts.setTimeout(timeout());
    gloo::barrier(opts);
  }

  void exchangeDescriptors(const CollectiveDescriptor& mine, std::vector<CollectiveDescriptor>& all) override {
    // One round of direct messages (latency of one hop) instead of Gloo's ring allgather (size-1 hops).
    std::vector<CollectiveDescriptor> out(size(), mine);
    exchangeWithPeers(out.data(), all.data(), sizeof(CollectiveDescriptor), kDescriptorPrefix);
  }

  bool isBackendTimeout(const std::exception& e) const override { return isGlooTimeout(e); }
  bool checksOwnDescriptors() const override { return true; }

 private:
  void requireHost(const Buffer& b, const char* what) const {
    RT_CHECK_T(CommError, !b.device.isCuda(), "gloo ", what, ": buffers must be on the host (got cuda:",
               b.device.cuda_index, "); use the nccl backend for CUDA tensors");
  }

  // send[r] (item_bytes each) goes to rank r, recv[r] comes from rank r; recv[rank] = send[rank].
  void exchangeWithPeers(const void* send, void* recv, size_t item_bytes, uint8_t prefix) {
    const int n = size();
    auto* in = static_cast<const uint8_t*>(send);
    auto* out = static_cast<uint8_t*>(recv);
    std::memcpy(out + rank() * item_bytes, in + rank() * item_bytes, item_bytes);
    auto recv_buf = context_->createUnboundBuffer(out, n * item_bytes);
    auto send_buf = context_->createUnboundBuffer(const_cast<uint8_t*>(in), n * item_bytes);
    postExchange(*recv_buf, *send_buf, item_bytes, prefix);
    waitExchange(*recv_buf, *send_buf);
  }

  // Posts, for every peer, the receive of its item (at offset peer x item_bytes of recv_buf) and the send
  // of the item meant for it (same offset of send_buf); waitExchange completes them.
  void postExchange(gloo::transport::UnboundBuffer& recv_buf, gloo::transport::UnboundBuffer& send_buf,
                    size_t item_bytes, uint8_t prefix) {
    for (int peer = 0; peer < size(); ++peer) {
      if (peer != rank()) recv_buf.recv(peer, slot(prefix, 0), peer * item_bytes, item_bytes);
    }
    for (int peer = 0; peer < size(); ++peer) {
      if (peer != rank()) send_buf.send(peer, slot(prefix, 0), peer * item_bytes, item_bytes);
    }
  }
  void waitExchange(gloo::transport::UnboundBuffer& recv_buf, gloo::transport::UnboundBuffer& send_buf) {
    for (int i = 0; i < size() - 1; ++i) recv_buf.waitRecv(timeout());
    for (int i = 0; i < size() - 1; ++i) send_buf.waitSend(timeout());
  }

  // Posts [offset, offset + bytes) of `buffer` to or from `peer` as segments of at most kBytesSegment, in
  // order (Gloo matches per pair and slot in posting order); returns how many were posted.
  size_t postSegments(gloo::transport::UnboundBuffer& buffer, int peer, uint64_t key, size_t offset, size_t bytes,
                      bool is_send) {
    size_t posted = 0;
    for (size_t done = 0; done < bytes; done += kBytesSegment, ++posted) {
      const size_t length = std::min(kBytesSegment, bytes - done);
      if (is_send) {
        buffer.send(peer, key, offset + done, length);
      } else {
        buffer.recv(peer, key, offset + done, length);
      }
    }
    return posted;
  }
  // A buffer and how many receives and sends were posted on it: waiting completes exactly those.
  struct Posted {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer;
    size_t recvs = 0;
    size_t sends = 0;
  };
  void waitPosted(std::vector<Posted>& posted) {
    for (auto& p : posted) {
      for (size_t i = 0; i < p.recvs; ++i) p.buffer->waitRecv(timeout());
      for (size_t i = 0; i < p.sends; ++i) p.buffer->waitSend(timeout());
    }
  }

  WorkPtr postP2p(void* data, size_t bytes, int peer, uint32_t tag, bool is_send) {
    const std::string broken = shared()->brokenMessage();
    RT_CHECK_T(CommError, broken.empty(), "gloo p2p on a broken communicator; first failure: ", broken);
    RT_CHECK_T(CommError, peer >= 0 && peer < size() && peer != rank(), "gloo ", is_send ? "send" : "recv",
               ": bad peer ", peer, " (rank ", rank(), " of ", size(), ")");
    if (bytes == 0) return std::make_shared<CompletedWork>();
    RT_CHECK_T(CommError, data != nullptr, "gloo p2p: null buffer for ", bytes, " bytes");
    auto buffer = context_->createUnboundBuffer(data, bytes);
    if (is_send) {
      buffer->send(peer, slot(kP2pPrefix, tag));
    } else {
      buffer->recv(peer, slot(kP2pPrefix, tag));
    }
    return std::make_shared<GlooP2pWork>(std::move(buffer), is_send, peer, tag, timeout());
  }

  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
  BytesCapacity bytes_capacity_;  // only touched on the communication thread
};

}  // namespace

std::unique_ptr<CommunicatorBase> makeGlooCommunicator(const config::CommOptions& options, int rank, int size,
                                                       const std::string& hostname,
                                                       std::unique_ptr<dist::Store> store) {
  return std::make_unique<GlooCommunicator>(options, rank, size, hostname, std::move(store));
}

}  // namespace ringtrain::comm
