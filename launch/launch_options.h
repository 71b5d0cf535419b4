// ringrun's command line, parsed and checked once. Bad arguments become a ConfigError with a one-line
// message (ringrun prints it and exits with code 2).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ringtrain::launch {

inline constexpr int kDefaultMasterPort = 29500;
inline constexpr double kDefaultGracePeriodS = 5.0;
inline constexpr double kDefaultRendezvousTimeoutS = 300.0;
inline constexpr double kDefaultNodeTimeoutS = 30.0;

struct LaunchOptions {
  int nproc_per_node = 1;
  std::vector<std::string> gpu_ids;  // one per local rank with `--nproc-per-node gpu`, else empty
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = kDefaultMasterPort;  // 0 with --standalone: node 0 picks a free port
  bool standalone = false;
  int max_restarts = 0;
  std::string log_dir;  // empty: no per-rank files
  double grace_period_s = kDefaultGracePeriodS;
  double rendezvous_timeout_s = kDefaultRendezvousTimeoutS;
  double node_timeout_s = kDefaultNodeTimeoutS;  // a node silent this long has failed
  bool bind_cores = false;            // --bind-to cores: each local rank on its own slice of the CPUs
  std::vector<int> cpus;              // --cpus: the CPUs to slice, in this order; empty: all allowed, by id
  std::string job_token;              // empty on a single node: ringrun makes a fresh one
  std::vector<std::string> command;   // PROGRAM ARGS...
  std::string program_path;           // command[0] resolved against PATH
};

// `env` is ringrun's environment (PATH, RINGTRAIN_JOB_TOKEN, CUDA_VISIBLE_DEVICES). Returns nullopt when
// --help was printed. Throws ConfigError on bad arguments.
std::optional<LaunchOptions> parseLaunchOptions(int argc, char** argv, const std::map<std::string, std::string>& env);

}  // namespace ringtrain::launch
