// The NCCL backend, for buffers on one CUDA device per rank. Collectives run on the communicator's own
// CUDA stream, ordered after the stream the caller produced the data on (Device::cuda_stream) by an event,
// and the communication thread then polls that stream's completion event together with
// ncclCommGetAsyncError until done or comm.timeout_s: so Work::wait returns when the data are final, and a
// hung collective becomes a TimeoutError (the NCCL communicator is aborted; this communicator is broken).
// The unique id travels through the store. Byte collectives and point-to-point take host memory and stage
// it through device buffers. Every ncclResult_t and cudaError_t is checked; NCCL failures quote
// ncclGetErrorString and ncclGetLastError.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>

#include "backends.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {
namespace {

#define RT_CUDA_CHECK(call)                                                                         \
  do {                                                                                              \
    const cudaError_t rt_cuda_err_ = (call);                                                        \
    if (rt_cuda_err_ != cudaSuccess) {                                                              \
      RT_THROW(::ringtrain::CommError, #call, " failed: ", cudaGetErrorString(rt_cuda_err_));       \
    }                                                                                               \
  } while (0)

// `comm` may be null (before the communicator exists).
#define RT_NCCL_CHECK(comm, call)                                                                   \
  do {                                                                                              \
    const ncclResult_t rt_nccl_res_ = (call);                                                       \
    if (rt_nccl_res_ != ncclSuccess && rt_nccl_res_ != ncclInProgress) {                            \
      RT_THROW(::ringtrain::CommError, #call, " failed: ", ncclGetErrorString(rt_nccl_res_), " (",  \
               ncclGetLastError(comm), ")");                                                        \
    }                                                                                               \
  } while (0)

ncclDataType_t ncclType(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return ncclFloat32;
    case DataType::kFloat64: return ncclFloat64;
    case DataType::kFloat16: return ncclFloat16;
    case DataType::kBFloat16: return ncclBfloat16;
    case DataType::kInt64: return ncclInt64;
    case DataType::kInt32: return ncclInt32;
    case DataType::kUInt8: return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t ncclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAverage: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

struct NcclTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Device memory owned by RAII.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) RT_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class NcclCommunicator;

// A staged point-to-point transfer: its own device buffer and completion event.
class NcclP2pWork final : public PolledWork {
 public:
  NcclP2pWork(int device, ncclComm_t comm, cudaEvent_t done, DeviceBuffer staging, void* host_out, size_t bytes,
              std::string what, std::chrono::milliseconds default_timeout)
      : device_(device), comm_(comm), done_event_(done), staging_(std::move(staging)), host_out_(host_out),
        bytes_(bytes), what_(std::move(what)), default_timeout_(default_timeout),
        started_(std::chrono::steady_clock::now()) {}
  ~NcclP2pWork() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_) {
      try {
        waitLocked(default_timeout_);
      } catch (const std::exception& e) {
        ringtrain::warn("nccl: dropped an unfinished p2p operation: {}", e.what());
      }
    }
    cudaEventDestroy(done_event_);
  }
 private:
  void waitLocked(std::chrono::milliseconds timeout) override;

  const int device_;
  ncclComm_t comm_;  // owned by the communicator, which outlives its p2p works (waited in its destructor)
  cudaEvent_t done_event_;
  DeviceBuffer staging_;
  void* host_out_;  // recv only: where the bytes go
  const size_t bytes_;
  const std::string what_;
  const std::chrono::milliseconds default_timeout_;
  const std::chrono::steady_clock::time_point started_;
};

// Polls `event` and the communicator's asynchronous error until the event completes or the deadline.
// Returns false on timeout.
bool pollEvent(ncclComm_t comm, cudaEvent_t event, std::chrono::steady_clock::time_point deadline) {
  int spins = 0;
  while (true) {
    const cudaError_t state = cudaEventQuery(event);
    if (state == cudaSuccess) return true;
    if (state != cudaErrorNotReady) RT_THROW(CommError, "cudaEventQuery failed: ", cudaGetErrorString(state));
    ncclResult_t async = ncclSuccess;
    RT_NCCL_CHECK(comm, ncclCommGetAsyncError(comm, &async));
    if (async != ncclSuccess && async != ncclInProgress) {
      RT_THROW(CommError, "nccl asynchronous error: ", ncclGetErrorString(async), " (", ncclGetLastError(comm), ")");
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (++spins < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

void NcclP2pWork::waitLocked(std::chrono::milliseconds timeout) {
  if (done_) return;
  RT_CUDA_CHECK(cudaSetDevice(device_));
  if (!pollEvent(comm_, done_event_, std::chrono::steady_clock::now() + timeout)) {
    RT_THROW(TimeoutError, "nccl ", what_, " did not complete within ", static_cast<double>(timeout.count()) / 1000.0,
             " s");
  }
  if (host_out_ != nullptr) RT_CUDA_CHECK(cudaMemcpy(host_out_, staging_.data(), bytes_, cudaMemcpyDeviceToHost));
  done_ = true;
  duration_ = std::chrono::steady_clock::now() - started_;
}

class NcclCommunicator final : public CommunicatorBase {
 public:
  NcclCommunicator(const config::CommOptions& options, int rank, int size, int cuda_index,
                   std::unique_ptr<dist::Store> store)
      : CommunicatorBase(rank, size, options, std::move(store), "nccl"), device_(cuda_index) {
    RT_CHECK_T(ConfigError, cuda_index >= 0, "nccl needs a CUDA device (got cuda index ", cuda_index, ")");
    RT_CUDA_CHECK(cudaSetDevice(device_));
    waitForAllRanks(this->store(), rank, size, timeout(), "nccl rendezvous");
    ncclUniqueId id;
    if (rank == 0) {
      RT_NCCL_CHECK(nullptr, ncclGetUniqueId(&id));
      this->store().set("nccl_unique_id", dist::Bytes(id.internal, id.internal + sizeof id.internal));
    } else {
      const dist::Bytes bytes = this->store().get("nccl_unique_id", timeout());
      RT_CHECK_T(CommError, bytes.size() == sizeof id.internal, "nccl unique id of ", bytes.size(), " bytes");
      std::memcpy(id.internal, bytes.data(), sizeof id.internal);
    }
    // Nonblocking init, polled with a deadline: a peer that dies during init cannot hang us.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    RT_NCCL_CHECK(nullptr, ncclCommInitRankConfig(&comm_, size, id, rank, &config));
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    while (true) {
      ncclResult_t state = ncclInProgress;
      RT_NCCL_CHECK(comm_, ncclCommGetAsyncError(comm_, &state));
      if (state == ncclSuccess) break;
      if (state != ncclInProgress) {
        RT_THROW(CommError, "ncclCommInitRankConfig failed: ", ncclGetErrorString(state), " (",
                 ncclGetLastError(comm_), ")");
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        RT_THROW(TimeoutError, "nccl init did not complete within ", options.timeout_s, " s on rank ", rank);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    RT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RT_CUDA_CHECK(cudaStreamCreateWithFlags(&p2p_stream_, cudaStreamNonBlocking));
    RT_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    RT_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    scratch_ = DeviceBuffer(size * sizeof(CollectiveDescriptor) + 64);
  }

  ~NcclCommunicator() override {
    const bool clean = stopThread() && shared()->brokenMessage().empty();
    if (comm_ != nullptr) {
      if (clean) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (p2p_stream_ != nullptr) cudaStreamDestroy(p2p_stream_);
  }

  WorkPtr sendAsync(const void* data, size_t bytes, int peer, uint32_t tag) override {
    return postP2p(const_cast<void*>(data), bytes, peer, tag, true);
  }
  WorkPtr recvAsync(void* data, size_t bytes, int peer, uint32_t tag) override {
    return postP2p(data, bytes, peer, tag, false);
  }

 protected:
  void runAllreduce(Buffer buffer, ReduceOp op) override {
    requireDevice(buffer, "allreduce");
    enqueue(buffer.device.cuda_stream, [&] {
      return ncclAllReduce(buffer.data, buffer.data, buffer.count, ncclType(buffer.dtype), ncclOp(op), comm_, stream_);
    });
  }

  void runBroadcast(Buffer buffer, int root) override {
    requireDevice(buffer, "broadcast");
    enqueue(buffer.device.cuda_stream, [&] {
      return ncclBroadcast(buffer.data, buffer.data, buffer.count, ncclType(buffer.dtype), root, comm_, stream_);
    });
  }

  void runAllgather(Buffer send, Buffer recv) override {
    requireDevice(send, "allgather");
    requireDevice(recv, "allgather");
    enqueue(send.device.cuda_stream, [&] {
      return ncclAllGather(send.data, recv.data, send.count, ncclType(send.dtype), comm_, stream_);
    });
  }

  std::vector<std::vector<uint8_t>> runAllgatherBytes(const std::vector<uint8_t>& mine) override {
    const int n = size();
    const std::vector<uint64_t> sizes = gatherSizes({static_cast<uint64_t>(mine.size())}, 1);
    uint64_t max = 0;
    for (uint64_t s : sizes) max = std::max(max, s);
    std::vector<std::vector<uint8_t>> result(n);
    if (max == 0) return result;
    DeviceBuffer send(max), recv(max * n);
    RT_CUDA_CHECK(cudaMemcpy(send.data(), mine.data(), mine.size(), cudaMemcpyHostToDevice));
    enqueue(nullptr, [&] { return ncclAllGather(send.data(), recv.data(), max, ncclUint8, comm_, stream_); });
    std::vector<uint8_t> host(max * n);
    RT_CUDA_CHECK(cudaMemcpy(host.data(), recv.data(), host.size(), cudaMemcpyDeviceToHost));
    for (int r = 0; r < n; ++r) result[r].assign(host.begin() + r * max, host.begin() + r * max + sizes[r]);
    return result;
  }

  std::vector<std::vector<uint8_t>> runAllToAllBytes(const std::vector<std::vector<uint8_t>>& send) override {
    const int n = size();
    std::vector<uint64_t> mine(n);
    for (int r = 0; r < n; ++r) mine[r] = send[r].size();
    const std::vector<uint64_t> matrix = gatherSizes(mine, n);  // matrix[from * n + to]
    std::vector<DeviceBuffer> out(n), in(n);
    std::vector<std::vector<uint8_t>> result(n);
    for (int r = 0; r < n; ++r) {
      out[r] = DeviceBuffer(send[r].size());
      if (!send[r].empty()) RT_CUDA_CHECK(cudaMemcpy(out[r].data(), send[r].data(), send[r].size(), cudaMemcpyHostToDevice));
      in[r] = DeviceBuffer(matrix[r * n + rank()]);
    }
    enqueue(nullptr, [&] {
      RT_NCCL_CHECK(comm_, ncclGroupStart());
      for (int r = 0; r < n; ++r) {
        if (out[r].bytes() > 0) RT_NCCL_CHECK(comm_, ncclSend(out[r].data(), out[r].bytes(), ncclUint8, r, comm_, stream_));
        if (in[r].bytes() > 0) RT_NCCL_CHECK(comm_, ncclRecv(in[r].data(), in[r].bytes(), ncclUint8, r, comm_, stream_));
      }
      return ncclGroupEnd();
    });
    for (int r = 0; r < n; ++r) {
      result[r].resize(in[r].bytes());
      if (in[r].bytes() > 0) RT_CUDA_CHECK(cudaMemcpy(result[r].data(), in[r].data(), in[r].bytes(), cudaMemcpyDeviceToHost));
    }
    return result;
  }

  void runBarrier() override {
    enqueue(nullptr, [&] { return ncclAllReduce(scratch_.data(), scratch_.data(), 1, ncclFloat32, ncclSum, comm_, stream_); });
  }

  void exchangeDescriptors(const CollectiveDescriptor& mine, std::vector<CollectiveDescriptor>& all) override {
    uint8_t* base = scratch_.data() + 64;
    RT_CUDA_CHECK(cudaMemcpyAsync(base + rank() * sizeof mine, &mine, sizeof mine, cudaMemcpyHostToDevice, stream_));
    enqueue(nullptr, [&] {
      return ncclAllGather(base + rank() * sizeof mine, base, sizeof mine, ncclUint8, comm_, stream_);
    });
    RT_CUDA_CHECK(cudaMemcpy(all.data(), base, size() * sizeof mine, cudaMemcpyDeviceToHost));
  }

  bool isBackendTimeout(const std::exception& e) const override {
    return dynamic_cast<const NcclTimeout*>(&e) != nullptr;
  }
  bool runsSingleRank() const override { return true; }

 private:
  void requireDevice(const Buffer& b, const char* what) const {
    RT_CHECK_T(CommError, b.device.cuda_index == device_, "nccl ", what, ": buffer on ",
               b.device.isCuda() ? "cuda:" + std::to_string(b.device.cuda_index) : std::string("the host"),
               " but this communicator uses cuda:", device_);
  }

  // every rank's `count` values, rank-major
  std::vector<uint64_t> gatherSizes(const std::vector<uint64_t>& mine, size_t count) {
    DeviceBuffer d(count * sizeof(uint64_t) * size());
    RT_CUDA_CHECK(cudaMemcpy(d.data() + rank() * count * sizeof(uint64_t), mine.data(), count * sizeof(uint64_t),
                             cudaMemcpyHostToDevice));
    enqueue(nullptr, [&] {
      return ncclAllGather(d.data() + rank() * count * sizeof(uint64_t), d.data(), count, ncclUint64, comm_, stream_);
    });
    std::vector<uint64_t> all(count * size());
    RT_CUDA_CHECK(cudaMemcpy(all.data(), d.data(), all.size() * sizeof(uint64_t), cudaMemcpyDeviceToHost));
    return all;
  }

  // Orders stream_ after the producer, issues the NCCL call(s), and waits for their completion (or
  // comm.timeout_s: then the NCCL communicator is aborted and NcclTimeout thrown).
  template <typename Issue>
  void enqueue(void* producer_stream, Issue&& issue) {
    RT_CUDA_CHECK(cudaSetDevice(device_));
    RT_CUDA_CHECK(cudaEventRecord(ready_, static_cast<cudaStream_t>(producer_stream)));
    RT_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    {
      std::lock_guard<std::mutex> lock(nccl_mu_);
      RT_NCCL_CHECK(comm_, issue());
    }
    RT_CUDA_CHECK(cudaEventRecord(done_, stream_));
    if (!pollEvent(comm_, done_, std::chrono::steady_clock::now() + timeout())) {
      throw NcclTimeout("nccl operation timed out");
    }
  }

  WorkPtr postP2p(void* data, size_t bytes, int peer, uint32_t tag, bool is_send) {
    const std::string broken = shared()->brokenMessage();
    RT_CHECK_T(CommError, broken.empty(), "nccl p2p on a broken communicator; first failure: ", broken);
    RT_CHECK_T(CommError, peer >= 0 && peer < size() && peer != rank(), "nccl ", is_send ? "send" : "recv",
               ": bad peer ", peer);
    if (bytes == 0) return std::make_shared<CompletedWork>();
    RT_CUDA_CHECK(cudaSetDevice(device_));
    DeviceBuffer staging(bytes);
    cudaEvent_t done = nullptr;
    RT_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    {
      // NCCL matches point-to-point by order per peer; tags are not on its wire (they order like MPI's
      // within one tag only when each tag's transfers are posted in the same order on both sides).
      std::lock_guard<std::mutex> lock(nccl_mu_);
      if (is_send) {
        RT_CUDA_CHECK(cudaMemcpyAsync(staging.data(), data, bytes, cudaMemcpyHostToDevice, p2p_stream_));
        RT_NCCL_CHECK(comm_, ncclSend(staging.data(), bytes, ncclUint8, peer, comm_, p2p_stream_));
      } else {
        RT_NCCL_CHECK(comm_, ncclRecv(staging.data(), bytes, ncclUint8, peer, comm_, p2p_stream_));
      }
      RT_CUDA_CHECK(cudaEventRecord(done, p2p_stream_));
    }
    return std::make_shared<NcclP2pWork>(
        device_, comm_, done, std::move(staging), is_send ? nullptr : data, bytes,
        detail::concat(is_send ? "send of " : "recv of ", bytes, " bytes ", is_send ? "to" : "from", " rank ", peer,
                       " (tag ", tag, ")"),
        timeout());
  }

  const int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;      // collectives
  cudaStream_t p2p_stream_ = nullptr;  // staged point-to-point
  cudaEvent_t ready_ = nullptr;        // producer stream -> stream_
  cudaEvent_t done_ = nullptr;         // completion of the last collective
  DeviceBuffer scratch_;               // descriptors and the barrier's word
  std::mutex nccl_mu_;                 // NCCL calls on comm_ come from the comm thread and p2p callers
};

}  // namespace

std::unique_ptr<CommunicatorBase> makeNcclCommunicator(const config::CommOptions& options, int rank, int size,
                                                       int cuda_index, std::unique_ptr<dist::Store> store) {
  return std::make_unique<NcclCommunicator>(options, rank, size, cuda_index, std::move(store));
}

}  // namespace ringtrain::comm
