// The ring allreduce over the MPI backend, as real processes under mpirun at world sizes 1-4: this binary
// re-runs itself under mpirun with RINGTRAIN_RING_MPI_CHILD=1, where RingMpiChild does the checks of
// ring_check.h (every dtype, op and odd size; through the factory, and called directly with average).
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "ringtrain/build_config.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/comm/ring_allreduce.h"
#include "ringtrain/dist/connect_store.h"
#include "ringtrain/dist/process_info.h"
#include "testing/command.h"
#include "testing/ring_check.h"

namespace ringtrain::comm {
namespace {

constexpr const char* kChildEnv = "RINGTRAIN_RING_MPI_CHILD";


TEST(RingMpiChild, EveryDtypeOpAndOddSize) {
  if (std::getenv(kChildEnv) == nullptr) GTEST_SKIP() << "runs only as a rank under mpirun (see RingOverMpi)";
  config::CommOptions options;
  options.backend = "mpi";
  options.timeout_s = 60;
  options.ring_segment_kb = 4;
  options.ring_inflight = 3;
  const dist::ProcessInfo process = dist::detectProcessInfo(dist::processEnvironment(), options);
  auto store = dist::connectStore(process, std::chrono::seconds(60));
  options.allreduce_algorithm = "ring";
  auto ring = makeCommunicator(options, process, *store);
  options.allreduce_algorithm = "native";
  auto native = makeCommunicator(options, process, *store);
  testing::checkRingCases(*ring, [&](Buffer b, ReduceOp op) { ring->allreduce(b, op); }, 20011);
  RingOptions direct;
  direct.segment_bytes = 4096;
  direct.direct_max_bytes = 1024;
  testing::checkRingCases(*native, [&](Buffer b, ReduceOp op) { ringAllreduce(*native, b, op, direct); }, 20011);
  native->barrier();
}

class RingOverMpi : public ::testing::TestWithParam<int> {};

TEST_P(RingOverMpi, ProcessesUnderMpirun) {
#if !RINGTRAIN_WITH_MPI
  GTEST_SKIP() << "built without MPI";
#endif
  if (std::getenv(kChildEnv) != nullptr) GTEST_SKIP() << "already a child";
  const int n = GetParam();
  testing::CommandOptions opts;
  opts.timeout = std::chrono::seconds(150);
  opts.env = {{kChildEnv, "1"},
              {"MASTER_ADDR", "127.0.0.1"},
              {"MASTER_PORT", std::to_string(testing::freeLoopbackPort())},
              {"OMPI_ALLOW_RUN_AS_ROOT", "1"},
              {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"}};
  const auto result = testing::runCommand(
      {"mpirun", "-np", std::to_string(n), "--oversubscribe", "--bind-to", "none", "-x", kChildEnv, "-x",
       "MASTER_ADDR", "-x", "MASTER_PORT", testing::binPath("test_comm_multiprocess"),
       "--gtest_filter=RingMpiChild.*", "--gtest_color=no"},
      opts);
  EXPECT_TRUE(result.ok()) << "exit " << result.exit_code << " signal " << result.term_signal << " timed out "
                           << result.timed_out << "\nstdout:\n" << result.out << "\nstderr:\n" << result.err;
  size_t passed = 0;
  for (size_t at = result.out.find("[  PASSED  ] 1 test"); at != std::string::npos;
       at = result.out.find("[  PASSED  ] 1 test", at + 1)) {
    ++passed;
  }
  EXPECT_EQ(passed, static_cast<size_t>(n)) << result.out;
  EXPECT_EQ(result.out.find("SKIPPED"), std::string::npos) << result.out;
}

INSTANTIATE_TEST_SUITE_P(Ring, RingOverMpi, ::testing::Values(1, 2, 3, 4));

}  // namespace
}  // namespace ringtrain::comm
