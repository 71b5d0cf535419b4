#include "ringtrain/dist/process_info.h"

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"

namespace ringtrain::dist {
namespace {

TEST(ProcessInfo, SingleProcessWithoutLauncher) {
  const ProcessInfo p = detectProcessInfo({}, config::CommOptions{});
  EXPECT_EQ(p.rank, 0);
  EXPECT_EQ(p.world_size, 1);
  EXPECT_EQ(p.launcher, "single");
  EXPECT_EQ(p.master_port, 29500);
}

TEST(ProcessInfo, RingrunVariables) {
  const ProcessInfo p = detectProcessInfo({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                                           {"LOCAL_WORLD_SIZE", "2"}, {"GROUP_RANK", "1"}, {"MASTER_ADDR", "10.0.0.1"},
                                           {"MASTER_PORT", "1234"}, {"RINGTRAIN_JOB_TOKEN", "abc"},
                                           {"RINGTRAIN_RESTART_COUNT", "2"}, {"RINGTRAIN_LAUNCHER", "ringrun"}},
                                          config::CommOptions{});
  EXPECT_EQ(p.launcher, "ringrun");
  EXPECT_EQ(p.rank, 3);
  EXPECT_EQ(p.world_size, 4);
  EXPECT_EQ(p.local_rank, 1);
  EXPECT_EQ(p.local_world_size, 2);
  EXPECT_EQ(p.node_rank, 1);
  EXPECT_EQ(p.master_addr, "10.0.0.1");
  EXPECT_EQ(p.master_port, 1234);
  EXPECT_EQ(p.job_token, "abc");
  EXPECT_EQ(p.restart_count, 2);
}

// RANK/WORLD_SIZE not from ringrun: torchrun when its own variables say so (its store holds MASTER_PORT,
// ours goes to the next port), else variables set by hand (rank 0's store on MASTER_PORT). A job token
// exported for rank 0's store does not make it ringrun's: no rank would host the store then.
TEST(ProcessInfo, TorchrunAndHandSetVariablesAreToldApart) {
  std::map<std::string, std::string> by_hand = {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1234"}};
  EXPECT_EQ(detectProcessInfo(by_hand, config::CommOptions{}).launcher, "env");
  std::map<std::string, std::string> torchrun = by_hand;
  torchrun["TORCHELASTIC_RUN_ID"] = "none";
  EXPECT_EQ(detectProcessInfo(torchrun, config::CommOptions{}).launcher, "torchrun");
  by_hand["RINGTRAIN_JOB_TOKEN"] = "secret";
  torchrun["RINGTRAIN_JOB_TOKEN"] = "secret";
  EXPECT_EQ(detectProcessInfo(by_hand, config::CommOptions{}).launcher, "env");
  EXPECT_EQ(detectProcessInfo(by_hand, config::CommOptions{}).job_token, "secret");
  EXPECT_EQ(detectProcessInfo(torchrun, config::CommOptions{}).launcher, "torchrun");
}

// RANK/WORLD_SIZE left over in an environment must not split an mpirun job into jobs of one.
TEST(ProcessInfo, HandSetRankThatDisagreesWithMpirunIsRefused) {
  const std::map<std::string, std::string> env = {{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_RANK", "1"},
                                                  {"OMPI_COMM_WORLD_SIZE", "2"}};
  EXPECT_THAT([&] { detectProcessInfo(env, config::CommOptions{}); },
              ::testing::ThrowsMessage<ConfigError>(::testing::HasSubstr(
                  "RANK=0 WORLD_SIZE=1 disagree with mpirun's OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2")));
  // Agreeing values are fine; so is ringrun (RINGTRAIN_LAUNCHER) or torchrun started inside an allocation.
  std::map<std::string, std::string> same = env;
  same["RANK"] = "1";
  same["WORLD_SIZE"] = "2";
  EXPECT_EQ(detectProcessInfo(same, config::CommOptions{}).rank, 1);
  std::map<std::string, std::string> under_ringrun = env;
  under_ringrun["RINGTRAIN_JOB_TOKEN"] = "t";
  under_ringrun["RINGTRAIN_LAUNCHER"] = "ringrun";
  EXPECT_EQ(detectProcessInfo(under_ringrun, config::CommOptions{}).launcher, "ringrun");
  std::map<std::string, std::string> torchrun_in_slurm = {{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"SLURM_PROCID", "1"},
                                                          {"SLURM_NTASKS", "2"}, {"TORCHELASTIC_RUN_ID", "x"}};
  EXPECT_EQ(detectProcessInfo(torchrun_in_slurm, config::CommOptions{}).rank, 5);
}

TEST(ProcessInfo, MpirunAndSlurmVariables) {
  config::CommOptions comm;
  comm.master_port = 4000;
  ProcessInfo p = detectProcessInfo({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}, comm);
  EXPECT_EQ(p.launcher, "mpirun");
  EXPECT_EQ(p.rank, 1);
  EXPECT_EQ(p.world_size, 2);
  EXPECT_EQ(p.master_port, 4000);  // from the config when the environment has none
  p = detectProcessInfo({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}}, comm);
  EXPECT_EQ(p.launcher, "slurm");
  EXPECT_EQ(p.rank, 5);
  EXPECT_EQ(p.local_rank, 1);
}

// Ranks on several nodes cannot meet at a loopback store address (the default 127.0.0.1, or a host name
// that Debian's /etc/hosts maps to 127.0.1.1): refused at once instead of a 300 s wait and a refused
// connection. One node, or a routable address, is fine.
TEST(ProcessInfo, ALoopbackStoreAddressAcrossNodesIsRefused) {
  const std::map<std::string, std::string> two_nodes = {{"OMPI_COMM_WORLD_RANK", "1"},
                                                        {"OMPI_COMM_WORLD_SIZE", "8"},
                                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
  EXPECT_THAT([&] { detectProcessInfo(two_nodes, {}); },
              ::testing::ThrowsMessage<ConfigError>(::testing::HasSubstr(
                  "the job's 8 ranks run on several nodes (4 on this one), but its store's address "
                  "MASTER_ADDR=127.0.0.1 is a loopback address")));
  auto named = two_nodes;
  named["MASTER_ADDR"] = "localhost";
  EXPECT_THAT([&] { detectProcessInfo(named, {}); },
              ::testing::ThrowsMessage<ConfigError>(::testing::HasSubstr("MASTER_ADDR=localhost resolves to")));
  auto routable = two_nodes;
  routable["MASTER_ADDR"] = "10.1.2.3";
  EXPECT_EQ(detectProcessInfo(routable, {}).master_addr, "10.1.2.3");
  auto one_node = two_nodes;
  one_node["OMPI_COMM_WORLD_LOCAL_SIZE"] = "8";
  EXPECT_EQ(detectProcessInfo(one_node, {}).master_addr, "127.0.0.1");
  // Slurm: the step's node count decides (a requested tasks-per-node count is not where the tasks run).
  const std::map<std::string, std::string> slurm = {{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "4"},
                                                    {"SLURM_NTASKS_PER_NODE", "2"}, {"SLURM_STEP_NUM_NODES", "1"}};
  EXPECT_EQ(detectProcessInfo(slurm, {}).master_addr, "127.0.0.1");
  auto slurm_two = slurm;
  slurm_two["SLURM_STEP_NUM_NODES"] = "2";
  EXPECT_THROW(detectProcessInfo(slurm_two, {}), ConfigError);
}

TEST(ProcessInfo, BadValuesAreConfigErrors) {
  EXPECT_THROW(detectProcessInfo({{"RANK", "x"}, {"WORLD_SIZE", "2"}}, {}), ConfigError);
  EXPECT_THROW(detectProcessInfo({{"RANK", "2"}, {"WORLD_SIZE", "2"}}, {}), ConfigError);
  EXPECT_THROW(detectProcessInfo({{"RANK", "0"}, {"WORLD_SIZE", "0"}}, {}), ConfigError);
  EXPECT_THROW(detectProcessInfo({{"MASTER_PORT", "99999"}}, {}), ConfigError);
  // Half a pair is a launch script's mistake, not a job of one.
  EXPECT_THAT([] { detectProcessInfo({{"RANK", "1"}}, {}); },
              ::testing::ThrowsMessage<ConfigError>(::testing::HasSubstr("RANK is set but WORLD_SIZE is not")));
  EXPECT_THAT([] { detectProcessInfo({{"OMPI_COMM_WORLD_SIZE", "2"}}, {}); },
              ::testing::ThrowsMessage<ConfigError>(
                  ::testing::HasSubstr("OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not")));
  EXPECT_EQ(detectProcessInfo({{"SLURM_NTASKS", "4"}}, {}).world_size, 1);  // an salloc shell, no srun step
}

}  // namespace
}  // namespace ringtrain::dist
