#include "ringtrain/dist/process_info.h"

#include <charconv>

#include <fmt/format.h>

#include "dist/tcp_socket.h"
#include "ringtrain/core/error.h"

extern char** environ;

namespace ringtrain::dist {
namespace {

const std::string* lookup(const std::map<std::string, std::string>& env, const std::string& key) {
  auto it = env.find(key);
  return it == env.end() || it->second.empty() ? nullptr : &it->second;
}

int parseInt(const std::map<std::string, std::string>& env, const std::string& key, int fallback, int min_value) {
  const std::string* text = lookup(env, key);
  if (text == nullptr) return fallback;
  int value = 0;
  const char* end = text->data() + text->size();
  auto [ptr, ec] = std::from_chars(text->data(), end, value);
  if (ec != std::errc() || ptr != end || value < min_value) {
    RT_THROW(ConfigError, "environment variable ", key, "='", *text, "' is not an integer >= ", min_value);
  }
  return value;
}

struct Names {
  const char* launcher;
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;
  const char* node_rank;
};

// Ranks on several nodes meet at rank 0's store: at a loopback address, only rank 0's own node reaches it,
// and the others would knock until comm.timeout_s (300 s) and then blame a refused connection. Several
// nodes: fewer ranks here than in the job (mpirun's local size), or Slurm's node count for the step.
void refuseLoopbackAcrossNodes(const ProcessInfo& info, const std::map<std::string, std::string>& env) {
  if (info.launcher == "single" || info.launcher == "ringrun") return;
  const int slurm_nodes =
      info.launcher == "slurm" ? parseInt(env, "SLURM_STEP_NUM_NODES", parseInt(env, "SLURM_NNODES", 1, 1), 1) : 0;
  const bool several_nodes = info.launcher == "slurm" ? slurm_nodes > 1 : info.local_world_size < info.world_size;
  if (!several_nodes) return;
  const std::string loopback = net::loopbackBindAddress(info.master_addr);  // what rank 0's store would bind
  if (loopback.empty()) return;
  const std::string where = info.launcher == "slurm" ? fmt::format("{} nodes", slurm_nodes)
                                                     : fmt::format("{} on this one", info.local_world_size);
  RT_THROW(ConfigError, "the job's ", info.world_size, " ranks run on several nodes (", where,
           "), but its store's address MASTER_ADDR=", info.master_addr,
           info.master_addr == loopback ? std::string() : " resolves to " + loopback + " here, which",
           " is a loopback address that only its own node reaches: set MASTER_ADDR to an address of rank 0's "
           "node that the others can reach");
}

}  // namespace

std::map<std::string, std::string> processEnvironment() {
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    const size_t eq = text.find('=');
    if (eq != std::string::npos) env.emplace(text.substr(0, eq), text.substr(eq + 1));
  }
  return env;
}

ProcessInfo detectProcessInfo(const std::map<std::string, std::string>& env, const config::CommOptions& comm) {
  static const Names kLaunchers[] = {
      {"ringrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"},
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_NODE_RANK"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "SLURM_NODEID"},
  };
  ProcessInfo info;
  info.master_addr = comm.master_addr;
  info.master_port = comm.master_port;
  for (const Names& names : kLaunchers) {
    if (lookup(env, names.rank) == nullptr || lookup(env, names.size) == nullptr) continue;
    info.launcher = names.launcher;
    // RANK/WORLD_SIZE not from ringrun (which says so in RINGTRAIN_LAUNCHER): torchrun (it sets
    // TORCHELASTIC_RUN_ID), or set by hand, with or without a RINGTRAIN_JOB_TOKEN for rank 0's store.
    const std::string* marker = lookup(env, "RINGTRAIN_LAUNCHER");
    if (info.launcher == "ringrun" && (marker == nullptr || *marker != "ringrun")) {
      info.launcher = lookup(env, "TORCHELASTIC_RUN_ID") != nullptr ? "torchrun" : "env";
    }
    info.world_size = parseInt(env, names.size, 1, 1);
    info.rank = parseInt(env, names.rank, 0, 0);
    info.local_rank = parseInt(env, names.local_rank, info.rank, 0);
    info.local_world_size = parseInt(env, names.local_size, info.world_size, 1);
    info.node_rank = parseInt(env, names.node_rank, 0, 0);
    break;
  }
  // Half of a launcher's pair (a RANK without WORLD_SIZE, from a hand-written launch script) would
  // otherwise run silently as a job of one. Not Slurm's: an salloc shell has SLURM_NTASKS and no
  // SLURM_PROCID, and a process started there is rightly a job of one.
  if (info.launcher == "single") {
    for (const Names& names : kLaunchers) {
      if (std::string(names.launcher) == "slurm") continue;
      const bool has_rank = lookup(env, names.rank) != nullptr, has_size = lookup(env, names.size) != nullptr;
      if (has_rank != has_size) {
        RT_THROW(ConfigError, has_rank ? names.rank : names.size, " is set but ", has_rank ? names.size : names.rank,
                 " is not: set both (", names.launcher, " sets them for each rank), or neither for one process");
      }
    }
  }
  // RANK/WORLD_SIZE by hand (not ringrun, not torchrun) beside mpirun's or srun's own pair: left over in
  // an environment, they would win and split one job into independent jobs of their size, writing the same
  // outputs. ringrun and torchrun set RANK for processes they started inside mpirun or srun: those differ
  // rightly.
  if (info.launcher == "env") {
    for (const Names& names : kLaunchers) {
      if (std::string(names.launcher) == "ringrun" || lookup(env, names.rank) == nullptr ||
          lookup(env, names.size) == nullptr) {
        continue;
      }
      const int rank = parseInt(env, names.rank, 0, 0), size = parseInt(env, names.size, 1, 1);
      if (rank != info.rank || size != info.world_size) {
        RT_THROW(ConfigError, "RANK=", info.rank, " WORLD_SIZE=", info.world_size, " disagree with ", names.launcher,
                 "'s ", names.rank, "=", rank, " ", names.size, "=", size,
                 ": unset RANK and WORLD_SIZE (left over from another launch?) or start the job with one launcher");
      }
    }
  }
  if (info.rank >= info.world_size) {
    RT_THROW(ConfigError, "rank ", info.rank, " is not below the world size ", info.world_size,
             " (launcher: ", info.launcher, ")");
  }
  if (const std::string* addr = lookup(env, "MASTER_ADDR")) info.master_addr = *addr;
  info.master_port = parseInt(env, "MASTER_PORT", info.master_port, 1);
  if (info.master_port > 65535) RT_THROW(ConfigError, "MASTER_PORT ", info.master_port, " is not a port (1-65535)");
  if (const std::string* token = lookup(env, "RINGTRAIN_JOB_TOKEN")) info.job_token = *token;
  info.restart_count = parseInt(env, "RINGTRAIN_RESTART_COUNT", 0, 0);
  refuseLoopbackAcrossNodes(info, env);
  return info;
}

}  // namespace ringtrain::dist
