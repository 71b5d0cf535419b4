// The ring allreduce over the real backends' point-to-point (Gloo over loopback TCP, ranks as threads):
// through the factory (comm.allreduce_algorithm: ring) and called directly, world sizes 1-4, every dtype and
// op, odd sizes on both sides of the small-buffer threshold and of the segment size, closed-form values.
// The same checks over MPI processes are in ring_mpi_mptest.cc.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "ringtrain/comm/reduce.h"
#include "ringtrain/comm/ring_allreduce.h"
#include "testing/rank_threads.h"
#include "testing/ring_check.h"

namespace ringtrain::comm {
namespace {

class RingOverGloo : public ::testing::TestWithParam<int> {};

TEST_P(RingOverGloo, ThroughTheFactoryEveryDtypeOpAndOddSize) {
  config::CommOptions options = testing::testCommOptions();
  options.allreduce_algorithm = "ring";
  options.ring_segment_kb = 4;  // several segments per chunk even for modest counts
  options.ring_inflight = 3;
  const auto results = testing::runWithCommunicators(GetParam(), options, [](Communicator& comm) {
    testing::checkRingCases(comm, [&](Buffer buffer, ReduceOp op) { comm.allreduce(buffer, op); }, 20011);
  });
  for (size_t r = 0; r < results.size(); ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].error;
}

TEST_P(RingOverGloo, CalledDirectlyWithAverage) {
  config::CommOptions options = testing::testCommOptions();
  options.allreduce_algorithm = "native";
  const auto results = testing::runWithCommunicators(GetParam(), options, [](Communicator& comm) {
    RingOptions ring;
    ring.segment_bytes = 4096;
    ring.inflight = 2;
    ring.direct_max_bytes = 1024;
    testing::checkRingCases(comm, [&](Buffer buffer, ReduceOp op) { ringAllreduce(comm, buffer, op, ring); }, 20011);
  });
  for (size_t r = 0; r < results.size(); ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].error;
}

INSTANTIATE_TEST_SUITE_P(Ring, RingOverGloo, ::testing::Values(1, 2, 3, 4));

}  // namespace
}  // namespace ringtrain::comm
