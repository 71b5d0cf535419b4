// Who this process is in the job. Read once at start from what the launcher put in the environment:
//   ringrun / torchrun : RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR/PORT
//   mpirun (OpenMPI)   : OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE, _NODE_RANK
//   srun (SLURM)       : SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID
//   nothing            : a single process, rank 0 of 1
// MASTER_ADDR/MASTER_PORT come from the environment, else from the config's comm section.
#pragma once

#include <map>
#include <string>

#include "ringtrain/config/config.h"

namespace ringtrain::dist {

struct ProcessInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string job_token;      // RINGTRAIN_JOB_TOKEN; empty when not set (ringrun always sets it)
  std::string launcher = "single";  // ringrun | torchrun | env (RANK/WORLD_SIZE by hand) | mpirun | slurm | single
  int restart_count = 0;      // RINGTRAIN_RESTART_COUNT (ringrun --max-restarts)
};

// `env` is the process environment as a map (tests pass their own); throws ConfigError on a bad value.
ProcessInfo detectProcessInfo(const std::map<std::string, std::string>& env, const config::CommOptions& comm);
// The real environment of this process.
std::map<std::string, std::string> processEnvironment();

}  // namespace ringtrain::dist
