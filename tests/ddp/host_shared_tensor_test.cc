// Tensors shared by the ranks of one host (ddp.sparse_sync shared): ranks are threads with Gloo
// communicators, each mapping the memory separately, as processes do.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ddp/host_shared_tensor.h"
#include "ringtrain/build_config.h"
#include "testing/rank_threads.h"

namespace ringtrain::ddp::detail {
namespace {

using ::testing::HasSubstr;

#if RINGTRAIN_WITH_GLOO

TEST(HostSharedTensor, EveryRankStartsFromRankZerosValuesAndSeesTheOthersWrites) {
  const int world = 3;
  const auto results = testing::runWithCommunicators(world, testing::testCommOptions(), [&](comm::Communicator& comm) {
    ASSERT_TRUE(comm.canReadPeerMemory()) << "the test ranks share a host";
    const int me = comm.rank();
    at::Tensor shared = shareOnHost(comm, at::full({world, 4}, static_cast<float>(me + 1)), "test table");
    EXPECT_TRUE(at::equal(shared, at::ones({world, 4}))) << "rank " << me << " does not hold rank 0's values";
    comm.barrier();
    shared[me].fill_(static_cast<float>(10 + me));  // each rank writes the row it owns
    comm.barrier();
    for (int r = 0; r < world; ++r) {
      EXPECT_TRUE(at::equal(shared[r], at::full({4}, static_cast<float>(10 + r)))) << "rank " << me << " row " << r;
    }
    comm.barrier();  // nobody unmaps while another still reads
  });
  testing::expectAllOk(results);
}

TEST(HostSharedTensor, ASizeThatDiffersFromRankZerosFailsOnEveryRankNamingTheRank) {
  const auto results = testing::runWithCommunicators(3, testing::testCommOptions(), [](comm::Communicator& comm) {
    const int64_t rows = comm.rank() == 1 ? 7 : 5;
    shareOnHost(comm, at::zeros({rows, 2}), "test table");
  });
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_EQ(results[r].error_type, "CommError") << "rank " << r << ": " << results[r].error;
    EXPECT_THAT(results[r].error, HasSubstr("rank 1: rank 0 shares 40 bytes")) << "rank " << r;
    EXPECT_THAT(results[r].error, HasSubstr("test table")) << "rank " << r;
  }
}

TEST(HostSharedTensor, RanksThatDoNotShareAHostAreToldSo) {
  auto options = testing::testCommOptions();
  options.same_host_copy = false;  // what a job across hosts looks like to the communicator
  const auto results = testing::runWithCommunicators(2, options, [](comm::Communicator& comm) {
    shareOnHost(comm, at::zeros({4, 2}), "test table");
  });
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_THAT(results[r].error, HasSubstr("do not share a host")) << "rank " << r;
  }
}

TEST(HostSharedTensor, OneRankGetsItsOwnValues) {
  const auto results = testing::runWithCommunicators(1, testing::testCommOptions(), [](comm::Communicator& comm) {
    at::Tensor source = at::arange(6, at::kFloat).view({3, 2});
    EXPECT_TRUE(at::equal(shareOnHost(comm, source, "test table"), source));
  });
  EXPECT_TRUE(results[0].ok()) << results[0].error;
}

#endif  // RINGTRAIN_WITH_GLOO

}  // namespace
}  // namespace ringtrain::ddp::detail
