// The sparse-row sync of CUDA tables over NCCL, which stays on the device (src/ddp/sparse_sync_device.cc),
// at world size 1 on a lent GPU (NCCL refuses two ranks on one GPU): the count exchange, the allgathers of
// ids and values, the merge and the average run on the device; the result must be the rank's own rows,
// coalesced. (Padding between ranks of different counts is tested on host tensors at 3 ranks:
// tests/ddp/distributed_data_parallel_test.cc.) Skipped without NCCL or a CUDA device.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "ddp/sparse_sync_device.h"
#include "ringtrain/build_config.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/ddp/sparse_sync.h"
#include "ringtrain/dist/memory_store.h"
#include "ringtrain/dist/process_info.h"

namespace ringtrain::ddp {
namespace {

#define SKIP_WITHOUT_NCCL_DEVICE()                                             \
  if (!RINGTRAIN_HAVE_NCCL) GTEST_SKIP() << "NCCL backend not built";           \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

const at::Device kCuda(at::kCUDA, 0);

std::unique_ptr<comm::Communicator> ncclAlone(dist::MemoryStore& store) {
  config::CommOptions options;
  options.backend = "nccl";
  options.timeout_s = 60;
  comm::Device device;
  device.cuda_index = 0;
  return comm::makeCommunicator(options, dist::ProcessInfo{}, store, device);
}

at::Tensor dense(const at::Tensor& t) { return (t.is_sparse() ? t.to_dense() : t).cpu(); }

TEST(SparseSyncOnDevice, ReturnsTheRanksRowsCoalescedOnTheDevice) {
  SKIP_WITHOUT_NCCL_DEVICE();
  dist::MemoryStore store;
  auto comm = ncclAlone(store);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
  const at::Tensor table_a = at::zeros({50, 4}, f32);
  const at::Tensor table_b = at::zeros({30, 3}, f32);
  const at::Tensor table_c = at::zeros({20, 2}, f32);
  ASSERT_TRUE(detail::sparseSyncOnDevice(*comm, {table_a, table_b, table_c}));
  // a: sparse with duplicate rows (uncoalesced, as the model makes them); b: dense; c: no gradient.
  const at::Tensor ids = at::tensor(std::vector<int64_t>{7, 3, 7, 49, 0, 3}, at::kLong).to(kCuda);
  const at::Tensor values = at::randn({6, 4}, f32);
  const at::Tensor grad_a = at::_sparse_coo_tensor_unsafe(ids.unsqueeze(0), values, {50, 4}, f32.layout(at::kSparse));
  const at::Tensor grad_b = at::randn({30, 3}, f32);

  SparseRowSync sync(SparseSync::kAllgather);
  SparseSyncCounts counts;
  const auto results = sync.sync(*comm, {table_a, table_b, table_c}, {grad_a, grad_b, at::Tensor()}, counts);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_TRUE(r.is_sparse());
    EXPECT_TRUE(r.is_cuda());
    EXPECT_TRUE(r.is_coalesced());
  }
  EXPECT_TRUE(at::allclose(dense(results[0]), dense(grad_a), 1e-6, 1e-7));
  EXPECT_EQ(results[0]._nnz(), 4);  // rows 0, 3, 7, 49
  EXPECT_TRUE(at::allclose(dense(results[1]), dense(grad_b), 1e-6, 1e-7));
  EXPECT_EQ(results[2]._nnz(), 0);
  EXPECT_EQ(results[2].sizes(), table_c.sizes());
  EXPECT_EQ(counts.rows_local, 4u + 30u);
  EXPECT_EQ(counts.rows_global, 4u + 30u);
  EXPECT_EQ(counts.bytes_sent, 0u);  // alone: nothing leaves the rank
}

}  // namespace
}  // namespace ringtrain::ddp
