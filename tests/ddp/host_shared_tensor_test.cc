// Tensors shared by the ranks of one host (ddp.sparse_sync shared): ranks are threads with Gloo
// communicators, each mapping the memory separately, as processes do.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include <ATen/ATen.h>

#include "ddp/host_shared_tensor.h"
#include "ringtrain/build_config.h"
#include "testing/proc_files.h"
#include "testing/rank_threads.h"

namespace ringtrain::ddp::detail {
namespace {

using ::testing::HasSubstr;

// The advice counts the pool as it was before the tables took pages from it (a pool of 20 that gave the
// first of two 13-page tables its pages has 7 left: 26 is what makes room, not 20 + 26 - 7).
TEST(HugePageTally, SaysWhereTheTensorsWentAndWhatPoolMakesRoomForThem) {
  const size_t five_mib = size_t{5} << 20;  // 3 pages
  HugePageTally none(20, 20);
  none.add(size_t{1} << 20, false, "");  // under the smallest size: never asked
  EXPECT_EQ(none.report("tables"), "");
  HugePageTally all(64, 64);
  all.add(five_mib, true, "");
  EXPECT_EQ(all.report("tables"), "the tables are on 2 MiB pages from the host's pool (vm.nr_hugepages)");
  HugePageTally part(4, 4);
  part.add(five_mib, true, "");
  part.add(five_mib, false, "fallocate: No space left on device");
  EXPECT_EQ(part.report("tables"),
            "1 of the 2 tables are on 4 KiB pages (fallocate: No space left on device): they need 6 2 MiB pages from "
            "the host's pool, which had 4 free of 4 before the job took any; as root, sysctl vm.nr_hugepages=6 "
            "makes room for them");
  HugePageTally busy(10, 2);  // 8 pages held by others
  busy.add(five_mib, false, "fallocate: No space left on device");
  EXPECT_THAT(busy.report("tables"), HasSubstr("which had 2 free of 10 before the job took any; as root, sysctl "
                                                   "vm.nr_hugepages=11 makes room for them"));
  HugePageTally refused(10, 10);  // enough, refused all the same
  refused.add(five_mib, false, "fallocate: No space left on device");
  EXPECT_THAT(refused.report("tables"), HasSubstr("(enough: what refused them is above"));
}

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

// The huge-page pool (vm.nr_hugepages) is empty on CI machines: there the memory must stay on ordinary pages
// and rank 0 says why; where an administrator filled it (by hand: sysctl vm.nr_hugepages=64), the memory is on
// 2 MiB pages. The values are rank 0's either way.
TEST(HostSharedTensor, HugePagesComeFromThePoolWhereItHoldsEnoughElseRankZeroSaysWhy) {
  const int64_t rows = 5 * 1024, width = 256;  // 5 MiB of floats: 3 huge pages
  const long long free_pages = testing::freeTwoMegabytePoolPages();
  const bool pool_holds_them = free_pages >= 3;
  const auto results = testing::runWithCommunicators(2, testing::testCommOptions(), [&](comm::Communicator& comm) {
    const int me = comm.rank();
    bool used = !pool_holds_them;
    std::string why_not = "unset";
    at::Tensor source = at::arange(rows * width, at::kFloat).view({rows, width}) + me;
    at::Tensor shared = shareOnHost(comm, source, "test table", {true, &used, &why_not});
    EXPECT_TRUE(at::equal(shared, source - me)) << "rank " << me << " does not hold rank 0's values";
    EXPECT_EQ(used, pool_holds_them) << "rank " << me << ", " << free_pages << " free huge pages";
    const long long page_kb = testing::fieldOf(testing::smapsEntryAt(shared.data_ptr()), "KernelPageSize");
    EXPECT_EQ(page_kb, pool_holds_them ? 2048 : 4) << "rank " << me;
    if (me == 0 && !pool_holds_them) {
      EXPECT_THAT(why_not, ::testing::AnyOf(HasSubstr("fallocate: "), HasSubstr("mmap: "), HasSubstr("memfd_create: ")));
    } else {
      EXPECT_EQ(why_not, "") << "rank " << me;
    }
    // Under the smallest size, not asked of the pool at all: nothing to say.
    used = true;
    why_not = "unset";
    shareOnHost(comm, at::zeros({1024, 256}), "small table", {true, &used, &why_not});
    EXPECT_FALSE(used);
    EXPECT_EQ(why_not, "");
    comm.barrier();  // nobody unmaps while another still reads
  });
  testing::expectAllOk(results);
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
