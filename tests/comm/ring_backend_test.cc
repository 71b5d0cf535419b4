// The ring allreduce over the real backends' point-to-point (Gloo over loopback TCP, ranks as threads):
// through the factory (comm.allreduce_algorithm: ring) and called directly, world sizes 1-4, every dtype and
// op, odd sizes on both sides of the small-buffer threshold and of the segment size, closed-form values;
// with comm.same_host_copy on (segments read straight from the peer) and off (segments over TCP).
// The same checks over MPI processes are in ring_mpi_mptest.cc.
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "ringtrain/comm/reduce.h"
#include "ringtrain/comm/ring_allreduce.h"
#include "ringtrain/core/error.h"
#include "testing/rank_threads.h"
#include "testing/ring_check.h"

namespace ringtrain::comm {
namespace {

// Whether this process may read its own memory with process_vm_readv: ranks as threads share one pid, so
// the same-host copy works exactly when this does (a seccomp policy may forbid it).
bool selfReadWorks() {
  uint64_t word = 42, copy = 0;
  iovec local{&copy, sizeof(copy)}, remote{&word, sizeof(word)};
  return ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0) == sizeof(copy) && copy == 42;
}

// (world size, comm.same_host_copy)
class RingOverGloo : public ::testing::TestWithParam<std::tuple<int, bool>> {
 protected:
  int world() const { return std::get<0>(GetParam()); }
  config::CommOptions options() const {
    config::CommOptions options = testing::testCommOptions();
    options.same_host_copy = std::get<1>(GetParam());
    return options;
  }
  bool expectPeerCopy() const { return world() > 1 && std::get<1>(GetParam()) && selfReadWorks(); }
};

TEST_P(RingOverGloo, ThroughTheFactoryEveryDtypeOpAndOddSize) {
  config::CommOptions options = this->options();
  options.allreduce_algorithm = "ring";
  options.ring_segment_kb = 4;  // several segments per chunk even for modest counts
  options.ring_inflight = 3;
  const bool peer_copy = expectPeerCopy();
  const auto results = testing::runWithCommunicators(world(), options, [&](Communicator& comm) {
    RT_CHECK(comm.canReadPeerMemory() == peer_copy, "canReadPeerMemory() is ", comm.canReadPeerMemory());
    testing::checkRingCases(comm, [&](Buffer buffer, ReduceOp op) { comm.allreduce(buffer, op); }, 20011);
  });
  testing::expectAllOk(results);
}

TEST_P(RingOverGloo, CalledDirectlyWithAverage) {
  config::CommOptions options = this->options();
  options.allreduce_algorithm = "native";
  const auto results = testing::runWithCommunicators(world(), options, [](Communicator& comm) {
    RingOptions ring;
    ring.segment_bytes = 4096;
    ring.inflight = 2;
    ring.direct_max_bytes = 1024;
    testing::checkRingCases(comm, [&](Buffer buffer, ReduceOp op) { ringAllreduce(comm, buffer, op, ring); }, 20011);
  });
  testing::expectAllOk(results);
}

INSTANTIATE_TEST_SUITE_P(Ring, RingOverGloo, ::testing::Combine(::testing::Values(1, 2, 3, 4), ::testing::Bool()));

}  // namespace
}  // namespace ringtrain::comm
