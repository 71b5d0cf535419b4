// The MPI backend, for processes started by mpirun (OpenMPI). Every operation is nonblocking (MPI_I*) and
// completed by polling MPI_Test with a deadline, so a hang never traps the communication thread inside
// MPI: the wait times out, the ArrivalBoard names the missing ranks, and the communicator is marked
// broken (MPI cannot cancel a started collective, so the process must end; MPI_Finalize is then skipped,
// as it is when a communicator is destroyed by an exception: a failed rank ends at once).
// All MPI calls go through one process-wide mutex unless MPI granted MPI_THREAD_MULTIPLE.
//
// Each communicator owns two duplicates of MPI_COMM_WORLD: one for collectives and user point-to-point
// (tags < kReservedTagBase), one for ringtrain's reserved tags (shifted down by kReservedTagBase, since MPI
// tags stop at MPI_TAG_UB, often 2^31 - 1 or less).
// C bindings only: the C++ bindings (deprecated) would drag libmpi_cxx into every link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "backends.h"
#include "kept_for_good.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {
namespace {

std::string mpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, length);
}

// Process-wide MPI state: initialization (once), the call lock, finalization at exit unless a
// communicator broke with operations still pending.
class MpiRuntime {
 public:
  static MpiRuntime& get() {
    static MpiRuntime* runtime = new MpiRuntime();  // leaked: finalization happens in atexit
    return *runtime;
  }
  // Held around every MPI call (a no-op lock with MPI_THREAD_MULTIPLE).
  std::unique_lock<std::mutex> lock() {
    return serialize_ ? std::unique_lock<std::mutex>(mu_) : std::unique_lock<std::mutex>();
  }
  void markBroken() { broken_ = true; }

 private:
  MpiRuntime() {
    int initialized = 0;
    check(MPI_Initialized(&initialized), "MPI_Initialized");
    int provided = MPI_THREAD_SINGLE;
    if (!initialized) {
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
      std::atexit([] { get().finalize(); });
    } else {
      check(MPI_Query_thread(&provided), "MPI_Query_thread");
    }
    RT_CHECK_T(CommError, provided >= MPI_THREAD_SERIALIZED,
               "MPI provides thread level ", provided, "; ringtrain needs at least MPI_THREAD_SERIALIZED");
    serialize_ = provided < MPI_THREAD_MULTIPLE;
  }
  void finalize() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (broken_) return;  // pending operations of a hung collective would make MPI_Finalize hang too
    MPI_Finalize();
  }
  static void check(int code, const char* what) {
    if (code != MPI_SUCCESS) RT_THROW(CommError, what, " failed: ", mpiErrorString(code));
  }

  std::mutex mu_;
  bool serialize_ = true;
  std::atomic<bool> broken_{false};
};

#define RT_MPI_CHECK(call)                                                                    \
  do {                                                                                        \
    const int rt_mpi_code_ = (call);                                                          \
    if (rt_mpi_code_ != MPI_SUCCESS) {                                                        \
      RT_THROW(::ringtrain::CommError, #call, " failed: ", mpiErrorString(rt_mpi_code_));     \
    }                                                                                         \
  } while (0)

// MPI_Test until done or the deadline; sleeps briefly between polls once the operation is not quick, so
// that oversubscribed ranks leave the cores to each other. Returns false on timeout.
bool pollUntil(MPI_Request* request, std::chrono::steady_clock::time_point deadline) {
  int spins = 0;
  while (true) {
    int done = 0;
    {
      auto lock = MpiRuntime::get().lock();
      RT_MPI_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    }
    if (done) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (++spins < 200) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

MPI_Datatype mpiType(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return MPI_FLOAT;
    case DataType::kFloat64: return MPI_DOUBLE;
    case DataType::kInt64: return MPI_INT64_T;
    case DataType::kInt32: return MPI_INT32_T;
    case DataType::kUInt8: return MPI_UINT8_T;
    case DataType::kFloat16:
    case DataType::kBFloat16: return MPI_UINT16_T;
  }
  return MPI_BYTE;
}

// User ops for the 16-bit floats (MPI has no half types): reduce through float with reduce.h.
template <DataType D, ReduceOp O>
void reduce16(void* in, void* inout, int* len, MPI_Datatype*) {
  reduceInto(inout, in, static_cast<size_t>(*len), D, O);
}

class MpiOps {
 public:
  MPI_Op get(DataType dtype, ReduceOp op) {
    if (dtype != DataType::kFloat16 && dtype != DataType::kBFloat16) {
      switch (op) {
        case ReduceOp::kSum:
        case ReduceOp::kAverage: return MPI_SUM;
        case ReduceOp::kMax: return MPI_MAX;
        case ReduceOp::kMin: return MPI_MIN;
      }
    }
    const int d = dtype == DataType::kFloat16 ? 0 : 1;
    const int o = op == ReduceOp::kMax ? 1 : op == ReduceOp::kMin ? 2 : 0;
    if (ops_[d][o] == MPI_OP_NULL) {
      static MPI_User_function* const kFns[2][3] = {
          {reduce16<DataType::kFloat16, ReduceOp::kSum>, reduce16<DataType::kFloat16, ReduceOp::kMax>,
           reduce16<DataType::kFloat16, ReduceOp::kMin>},
          {reduce16<DataType::kBFloat16, ReduceOp::kSum>, reduce16<DataType::kBFloat16, ReduceOp::kMax>,
           reduce16<DataType::kBFloat16, ReduceOp::kMin>}};
      auto lock = MpiRuntime::get().lock();
      RT_MPI_CHECK(MPI_Op_create(kFns[d][o], 1, &ops_[d][o]));
    }
    return ops_[d][o];
  }

 private:
  MPI_Op ops_[2][3] = {{MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}, {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}};
};

class MpiP2pWork final : public PolledWork {
 public:
  MpiP2pWork(MPI_Request request, std::string what, std::chrono::milliseconds default_timeout)
      : request_(request), what_(std::move(what)), default_timeout_(default_timeout),
        started_(std::chrono::steady_clock::now()) {}
  ~MpiP2pWork() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    try {
      waitLocked(default_timeout_);
    } catch (const std::exception& e) {
      ringtrain::warn("mpi: dropped an unfinished p2p operation: {}", e.what());
      MpiRuntime::get().markBroken();
    }
  }
 private:
  void waitLocked(std::chrono::milliseconds timeout) override {
    if (done_) return;
    if (!pollUntil(&request_, std::chrono::steady_clock::now() + timeout)) {
      RT_THROW(TimeoutError, "mpi ", what_, " did not complete within ", static_cast<double>(timeout.count()) / 1000.0,
               " s");
    }
    done_ = true;
    duration_ = std::chrono::steady_clock::now() - started_;
  }

  MPI_Request request_;  // guarded by mu_
  const std::string what_;
  const std::chrono::milliseconds default_timeout_;
  const std::chrono::steady_clock::time_point started_;
};

int worldRank() {
  MpiRuntime::get();
  int rank = 0;
  auto lock = MpiRuntime::get().lock();
  RT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank;
}

// MPI counts are int: operations on more elements are split into chunks of at most this many.
constexpr size_t kMaxChunkElements = size_t{1} << 30;

class MpiCommunicator final : public CommunicatorBase {
 public:
  MpiCommunicator(const config::CommOptions& options, int expected_rank, int expected_size,
                  std::unique_ptr<dist::Store> store)
      : CommunicatorBase(worldRank(), expected_size, options, std::move(store), "mpi") {
    auto lock = MpiRuntime::get().lock();
    int size = 0;
    RT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    RT_CHECK_T(ConfigError, rank() == expected_rank && size == expected_size, "mpi: MPI_COMM_WORLD says rank ",
               rank(), " of ", size, " but the launcher said rank ", expected_rank, " of ", expected_size,
               ": comm.backend mpi needs processes started by mpirun (not ringrun or a hand launch); start them "
               "with mpirun, or use comm.backend gloo");
    RT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    RT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &reserved_comm_));
    void* value = nullptr;
    int found = 0;
    RT_MPI_CHECK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &value, &found));
    tag_ub_ = found ? *static_cast<int*>(value) : 32767;
    setUpPeerMemory(options.same_host_copy);
  }

  ~MpiCommunicator() override {
    const bool stopped = stopThread();
    // Destroyed by an exception on its way out (this rank failed): the other ranks may sit in a collective
    // this one will never join, and MPI_Finalize at exit, a fence across ranks, would wait for them until
    // their timeout. Skipped, the process ends at once, and mpirun stops the job for its exit code.
    if (!stopped || !shared()->brokenMessage().empty() || std::uncaught_exceptions() > 0) {
      MpiRuntime::get().markBroken();
      return;  // freeing communicators with pending requests is not allowed
    }
    auto lock = MpiRuntime::get().lock();
    MPI_Comm_free(&comm_);
    MPI_Comm_free(&reserved_comm_);
  }

  WorkPtr sendAsync(const void* data, size_t bytes, int peer, uint32_t tag) override {
    return postP2p(const_cast<void*>(data), bytes, peer, tag, true);
  }
  WorkPtr recvAsync(void* data, size_t bytes, int peer, uint32_t tag) override {
    return postP2p(data, bytes, peer, tag, false);
  }

 protected:
  void runAllreduce(Buffer buffer, ReduceOp op) override {
    requireHost(buffer, "allreduce");
    const MPI_Op mpi_op = ops_.get(buffer.dtype, op);
    const size_t element = elementSize(buffer.dtype);
    for (size_t offset = 0; offset < buffer.count; offset += kMaxChunkElements) {
      const int n = static_cast<int>(std::min(kMaxChunkElements, buffer.count - offset));
      complete("MPI_Iallreduce", [&](MPI_Request* r) {
        return MPI_Iallreduce(MPI_IN_PLACE, static_cast<uint8_t*>(buffer.data) + offset * element, n,
                              mpiType(buffer.dtype), mpi_op, comm_, r);
      });
    }
    if (op == ReduceOp::kAverage) finishAverage(buffer.data, buffer.count, buffer.dtype, size());
  }

  void runBroadcast(Buffer buffer, int root) override {
    requireHost(buffer, "broadcast");
    const size_t bytes = buffer.bytes();
    for (size_t offset = 0; offset < bytes; offset += kMaxChunkElements) {
      const int n = static_cast<int>(std::min(kMaxChunkElements, bytes - offset));
      complete("MPI_Ibcast", [&](MPI_Request* r) {
        return MPI_Ibcast(static_cast<uint8_t*>(buffer.data) + offset, n, MPI_BYTE, root, comm_, r);
      });
    }
  }

  void runAllgather(Buffer send, Buffer recv) override {
    requireHost(send, "allgather");
    requireHost(recv, "allgather");
    RT_CHECK_T(CommError, send.bytes() <= INT_MAX, "mpi allgather: ", send.bytes(), " bytes per rank is more than MPI's int count");
    const bool in_place = send.data == static_cast<uint8_t*>(recv.data) + rank() * send.bytes();
    complete("MPI_Iallgather", [&](MPI_Request* r) {
      return MPI_Iallgather(in_place ? MPI_IN_PLACE : send.data, static_cast<int>(send.bytes()), MPI_BYTE, recv.data,
                            static_cast<int>(send.bytes()), MPI_BYTE, comm_, r);
    });
  }

  std::vector<std::vector<uint8_t>> runAllgatherBytes(const std::vector<uint8_t>& mine) override {
    const int n = size();
    // What MPI writes into or reads counts from is kept (leaked) if the operation times out (see complete());
    // `mine` belongs to the caller's ByteExchange, which CommunicatorBase keeps the same way.
    struct Scratch {
      uint64_t my_size = 0;
      std::vector<uint64_t> sizes;
      std::vector<int> counts, displs;
      std::vector<uint8_t> all;
    };
    auto s = std::make_shared<Scratch>();
    s->my_size = mine.size();
    s->sizes.resize(n);
    complete("MPI_Iallgather", [&](MPI_Request* r) {
      return MPI_Iallgather(&s->my_size, 1, MPI_UINT64_T, s->sizes.data(), 1, MPI_UINT64_T, comm_, r);
    }, s);
    s->counts.resize(n);
    s->displs.resize(n);
    uint64_t total = 0;
    for (int i = 0; i < n; ++i) {
      s->displs[i] = static_cast<int>(total);
      s->counts[i] = static_cast<int>(s->sizes[i]);
      total += s->sizes[i];
    }
    RT_CHECK_T(CommError, total <= INT_MAX, "mpi allgatherBytes: ", total, " bytes in all is more than MPI's int count");
    s->all.resize(total);
    complete("MPI_Iallgatherv", [&](MPI_Request* r) {
      return MPI_Iallgatherv(mine.data(), static_cast<int>(s->my_size), MPI_BYTE, s->all.data(), s->counts.data(),
                             s->displs.data(), MPI_BYTE, comm_, r);
    }, s);
    std::vector<std::vector<uint8_t>> result(n);
    for (int i = 0; i < n; ++i) {
      result[i].assign(s->all.begin() + s->displs[i], s->all.begin() + s->displs[i] + s->counts[i]);
    }
    return result;
  }

  std::vector<std::vector<uint8_t>> runAllToAllBytes(const std::vector<std::vector<uint8_t>>& send) override {
    const int n = size();
    struct Scratch {  // kept (leaked) if an operation times out (see complete())
      std::vector<uint64_t> send_sizes, recv_sizes;
      std::vector<int> scounts, sdispls, rcounts, rdispls;
      std::vector<uint8_t> packed, unpacked;
    };
    auto s = std::make_shared<Scratch>();
    s->send_sizes.resize(n);
    s->recv_sizes.resize(n);
    for (int i = 0; i < n; ++i) s->send_sizes[i] = send[i].size();
    complete("MPI_Ialltoall", [&](MPI_Request* r) {
      return MPI_Ialltoall(s->send_sizes.data(), 1, MPI_UINT64_T, s->recv_sizes.data(), 1, MPI_UINT64_T, comm_, r);
    }, s);
    for (auto* v : {&s->scounts, &s->sdispls, &s->rcounts, &s->rdispls}) v->resize(n);
    uint64_t stotal = 0, rtotal = 0;
    for (int i = 0; i < n; ++i) {
      s->sdispls[i] = static_cast<int>(stotal);
      s->scounts[i] = static_cast<int>(s->send_sizes[i]);
      stotal += s->send_sizes[i];
      s->rdispls[i] = static_cast<int>(rtotal);
      s->rcounts[i] = static_cast<int>(s->recv_sizes[i]);
      rtotal += s->recv_sizes[i];
    }
    RT_CHECK_T(CommError, stotal <= INT_MAX && rtotal <= INT_MAX, "mpi allToAllBytes: more bytes than MPI's int count");
    s->packed.resize(stotal);
    s->unpacked.resize(rtotal);
    for (int i = 0; i < n; ++i) std::copy(send[i].begin(), send[i].end(), s->packed.begin() + s->sdispls[i]);
    complete("MPI_Ialltoallv", [&](MPI_Request* r) {
      return MPI_Ialltoallv(s->packed.data(), s->scounts.data(), s->sdispls.data(), MPI_BYTE, s->unpacked.data(),
                            s->rcounts.data(), s->rdispls.data(), MPI_BYTE, comm_, r);
    }, s);
    std::vector<std::vector<uint8_t>> result(n);
    for (int i = 0; i < n; ++i) {
      result[i].assign(s->unpacked.begin() + s->rdispls[i], s->unpacked.begin() + s->rdispls[i] + s->rcounts[i]);
    }
    return result;
  }

  void runBarrier() override {
    complete("MPI_Ibarrier", [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
  }

  void exchangeDescriptors(const CollectiveDescriptor& mine, std::vector<CollectiveDescriptor>& all) override {
    // The caller's vector is not MPI's to write into after a timeout (see complete()): a scratch of its own.
    struct Scratch {
      CollectiveDescriptor mine;
      std::vector<CollectiveDescriptor> all;
    };
    auto s = std::make_shared<Scratch>();
    s->mine = mine;
    s->all.resize(all.size());
    complete("MPI_Iallgather", [&](MPI_Request* r) {
      return MPI_Iallgather(&s->mine, sizeof s->mine, MPI_BYTE, s->all.data(), sizeof s->mine, MPI_BYTE, comm_, r);
    }, s);
    all = s->all;
  }

  bool isBackendTimeout(const std::exception& e) const override {
    return dynamic_cast<const BackendTimeout*>(&e) != nullptr;
  }

 private:
  struct BackendTimeout : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  // Starts a nonblocking MPI operation and polls it to completion within the communicator's timeout. MPI
  // cannot cancel a collective: one that times out stays posted, and may still write into its buffers or
  // read its counts, so `keep` (what owns them) is then kept for good (kept_for_good.h).
  template <typename Start>
  void complete(const char* what, Start&& start, const std::shared_ptr<const void>& keep = nullptr) {
    MPI_Request request = MPI_REQUEST_NULL;
    {
      auto lock = MpiRuntime::get().lock();
      const int code = start(&request);
      if (code != MPI_SUCCESS) RT_THROW(CommError, what, " failed: ", mpiErrorString(code));
    }
    if (!pollUntil(&request, std::chrono::steady_clock::now() + timeout())) {
      MpiRuntime::get().markBroken();
      keepForGood(keep);
      throw BackendTimeout(std::string(what) + " timed out");
    }
  }

  void requireHost(const Buffer& b, const char* what) const {
    RT_CHECK_T(CommError, !b.device.isCuda(), "mpi ", what, ": buffers must be on the host (got cuda:",
               b.device.cuda_index, ")");
  }

  WorkPtr postP2p(void* data, size_t bytes, int peer, uint32_t tag, bool is_send) {
    const std::string broken = shared()->brokenMessage();
    RT_CHECK_T(CommError, broken.empty(), "mpi p2p on a broken communicator; first failure: ", broken);
    RT_CHECK_T(CommError, peer >= 0 && peer < size() && peer != rank(), "mpi ", is_send ? "send" : "recv",
               ": bad peer ", peer, " (rank ", rank(), " of ", size(), ")");
    RT_CHECK_T(CommError, bytes <= INT_MAX, "mpi p2p: ", bytes, " bytes is more than MPI's int count");
    if (bytes == 0) return std::make_shared<CompletedWork>();
    const bool reserved = tag >= kReservedTagBase;
    const uint32_t mpi_tag = reserved ? tag - kReservedTagBase : tag;
    RT_CHECK_T(CommError, mpi_tag <= static_cast<uint32_t>(tag_ub_), "mpi p2p: tag ", tag, " exceeds MPI_TAG_UB ",
               tag_ub_);
    MPI_Request request = MPI_REQUEST_NULL;
    {
      auto lock = MpiRuntime::get().lock();
      MPI_Comm c = reserved ? reserved_comm_ : comm_;
      if (is_send) {
        RT_MPI_CHECK(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, static_cast<int>(mpi_tag), c, &request));
      } else {
        RT_MPI_CHECK(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, static_cast<int>(mpi_tag), c, &request));
      }
    }
    return std::make_shared<MpiP2pWork>(
        request,
        detail::concat(is_send ? "send of " : "recv of ", bytes, " bytes ", is_send ? "to" : "from", " rank ", peer,
                       " (tag ", tag, ")"),
        timeout());
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm reserved_comm_ = MPI_COMM_NULL;
  int tag_ub_ = 32767;
  MpiOps ops_;
};

}  // namespace

std::unique_ptr<CommunicatorBase> makeMpiCommunicator(const config::CommOptions& options, int expected_rank,
                                                      int expected_size, std::unique_ptr<dist::Store> store) {
  return std::make_unique<MpiCommunicator>(options, expected_rank, expected_size, std::move(store));
}

}  // namespace ringtrain::comm
