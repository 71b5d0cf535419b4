// The NCCL backend on real GPUs: one rank per device as threads (NCCL refuses two ranks on one GPU, so
// a one-GPU machine runs world size 1, which still goes through NCCL). Skips without NCCL or a device.
#include <gtest/gtest.h>

#include <cstdint>

#include "ringtrain/build_config.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/dist/memory_store.h"
#include "testing/rank_threads.h"

#if RINGTRAIN_HAVE_NCCL
#include "comm/cuda_memory.h"
#endif

namespace ringtrain::comm {
namespace {

using testing::expectAllOk;

#if RINGTRAIN_HAVE_NCCL

// Device memory for one test buffer.
class DeviceArray {
 public:
  DeviceArray(int device, size_t bytes) : ptr_(cuda::allocate(device, bytes)), bytes_(bytes) {}
  ~DeviceArray() { cuda::release(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  void upload(const std::vector<T>& v) {
    cuda::copyToDevice(ptr_, v.data(), v.size() * sizeof(T));
  }
  template <typename T>
  std::vector<T> download(size_t n) const {
    std::vector<T> v(n);
    cuda::copyToHost(v.data(), ptr_, n * sizeof(T));
    return v;
  }

 private:
  void* ptr_;
  size_t bytes_;
};

int gpus() { return std::min(cuda::deviceCount(), 4); }

std::vector<testing::RankResult> runOnGpus(int world, const std::function<void(Communicator&, int device)>& body) {
  dist::MemoryStore store;
  auto options = testing::testCommOptions(60);
  options.backend = "nccl";
  return testing::runRankThreads(world, [&](int rank) {
    dist::ProcessInfo process;
    process.rank = rank;
    process.world_size = world;
    auto comm = makeCommunicator(options, process, store, Device{rank, nullptr});
    body(*comm, rank);
  });
}

TEST(Nccl, AllreduceDtypesOpsAndOddSizes) {
  const int n = gpus();
  if (n == 0) GTEST_SKIP() << "no CUDA device";
  expectAllOk(runOnGpus(n, [&](Communicator& comm, int device) {
    EXPECT_EQ(comm.backendName(), "nccl");
    for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1000003}}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin}) {
        std::vector<float> host(count);
        for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>(comm.rank() + 1 + i % 5);
        DeviceArray d(device, count * 4);
        d.upload(host);
        comm.allreduce(Buffer{d.get(), count, DataType::kFloat32, Device{device, nullptr}}, op);
        const auto got = d.download<float>(count);
        for (size_t i = 0; i < count; i += 997) {
          const double k = static_cast<double>(i % 5);
          double want = op == ReduceOp::kSum ? n * (n + 1) / 2.0 + n * k
                        : op == ReduceOp::kAverage ? (n + 1) / 2.0 + k
                        : op == ReduceOp::kMax ? n + k
                                               : 1 + k;
          ASSERT_FLOAT_EQ(got[i], static_cast<float>(want)) << toString(op) << " count " << count << " i " << i;
        }
      }
      // 16-bit floats
      std::vector<uint16_t> h(count), b(count);
      for (size_t i = 0; i < count; ++i) {
        h[i] = floatToHalf(static_cast<float>(comm.rank() + 1));
        b[i] = floatToBFloat16(static_cast<float>(comm.rank() + 1));
      }
      DeviceArray dh(device, count * 2), db(device, count * 2);
      dh.upload(h);
      db.upload(b);
      comm.allreduce(Buffer{dh.get(), count, DataType::kFloat16, Device{device, nullptr}}, ReduceOp::kSum);
      comm.allreduce(Buffer{db.get(), count, DataType::kBFloat16, Device{device, nullptr}}, ReduceOp::kSum);
      const auto gh = dh.download<uint16_t>(count), gb = db.download<uint16_t>(count);
      for (size_t i = 0; i < count; i += 997) {
        ASSERT_EQ(halfToFloat(gh[i]), n * (n + 1) / 2.0f);
        ASSERT_EQ(bfloat16ToFloat(gb[i]), n * (n + 1) / 2.0f);
      }
    }
  }));
}

TEST(Nccl, BroadcastAllgatherBytesBarrierAndCheck) {
  const int n = gpus();
  if (n == 0) GTEST_SKIP() << "no CUDA device";
  expectAllOk(runOnGpus(n, [&](Communicator& comm, int device) {
    std::vector<int64_t> v(100003, comm.rank());
    DeviceArray d(device, v.size() * 8);
    d.upload(v);
    comm.broadcast(Buffer{d.get(), v.size(), DataType::kInt64, Device{device, nullptr}}, n - 1);
    EXPECT_EQ(d.download<int64_t>(v.size()).back(), n - 1);
    std::vector<float> send(7, static_cast<float>(comm.rank()));
    DeviceArray ds(device, 28), dr(device, 28 * n);
    ds.upload(send);
    comm.allgather(Buffer{ds.get(), 7, DataType::kFloat32, Device{device, nullptr}},
                   Buffer{dr.get(), 7 * static_cast<size_t>(n), DataType::kFloat32, Device{device, nullptr}});
    const auto all = dr.download<float>(7 * n);
    for (int r = 0; r < n; ++r) EXPECT_EQ(all[r * 7 + 6], r);
    const auto bytes = comm.allgatherBytes(std::vector<uint8_t>(comm.rank() * 3 + 1, 9));
    for (int r = 0; r < n; ++r) EXPECT_EQ(bytes[r].size(), static_cast<size_t>(r * 3 + 1));
    std::vector<std::vector<uint8_t>> personal(n);
    for (int r = 0; r < n; ++r) personal[r].assign(r + 1, static_cast<uint8_t>(comm.rank()));
    const auto got = comm.allToAllBytes(personal);
    for (int r = 0; r < n; ++r) EXPECT_EQ(got[r], std::vector<uint8_t>(comm.rank() + 1, static_cast<uint8_t>(r)));
    comm.barrier();
  }));
}

TEST(Nccl, HostBuffersAreRefused) {
  if (gpus() == 0) GTEST_SKIP() << "no CUDA device";
  auto results = runOnGpus(1, [&](Communicator& comm, int) {
    float x = 1;
    comm.allreduce(Buffer{&x, 1, DataType::kFloat32}, ReduceOp::kSum);
  });
  EXPECT_EQ(results[0].error_type, "CommError");
  EXPECT_NE(results[0].error.find("buffer on the host but this communicator uses cuda:0"), std::string::npos)
      << results[0].error;
}

#else

TEST(Nccl, NotBuilt) { GTEST_SKIP() << "built without NCCL"; }

#endif

}  // namespace
}  // namespace ringtrain::comm
