// ringtrain::comm::JobGroup: this process's place in a job, and what a LibTorch program of one's own needs
// before it wraps its model in ddp::DistributedDataParallel.
//
//   ringtrain::comm::JobGroup job;   // who am I (ringrun, mpirun, srun, torchrun, RANK/WORLD_SIZE, or alone)
//   ringtrain::ddp::DistributedDataParallel ddp(*model, job.comm());
//
// Construction, collective:
//   1. reads the rank, world size and the place to meet from the launcher's environment
//      (dist::detectProcessInfo; MASTER_ADDR/PORT fall back to options.master_addr/master_port);
//   2. reaches the job's store (dist::connectStore);
//   3. waits until every rank has reached it, at most options.timeout_s, and checks that every rank uses
//      the same backend (as resolved for its device) and ring settings, was told the same world size, and
//      holds a rank no other process holds (ConfigError naming both, at once): a rank that
//      never starts is named (TimeoutError) instead of leaving the others inside a backend's own
//      rendezvous, which for MPI has no timeout;
//   4. connects the communicator (comm::makeCommunicator).
// The end (finish(), optional): every rank says in the store that it is done, and rank 0 fails, naming
// them, when some rank does not within options.timeout_s (one stopped or hung after its last collective).
// Destruction: the communicator is closed; then, outside ringrun (whose store outlives every rank), every
// rank says in the store that it is done, and rank 0, which hosts the store, waits for the others (at most
// options.timeout_s, naming them after 5 s) so that it does not take the store away from a rank still
// leaving. A rank that is unwinding an exception does not wait: its launcher stops the job.
// One JobGroup per process at a time; several one after another are fine: under ringrun, where one store
// serves them all, when every rank makes them in the same order (the n-th group's keys are its own);
// outside it, a rank other than 0 making the next group first waits (at most options.timeout_s) until
// rank 0 has stopped hosting the last one's store (a process keeps its rank from one group to the next).
// Not thread-safe: use it from the thread that trains.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/config/config.h"
#include "ringtrain/dist/process_info.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::comm {

class JobGroup {
 public:
  // Default options: comm.backend auto (gloo for host tensors), a 300 s timeout.
  explicit JobGroup(const config::CommOptions& options = {}, Device device = {});
  // Who this process is, already read (the trainer reads it to set up logging first).
  JobGroup(const config::CommOptions& options, const dist::ProcessInfo& process, Device device = {});
  ~JobGroup();
  JobGroup(const JobGroup&) = delete;
  JobGroup& operator=(const JobGroup&) = delete;

  int rank() const { return process_.rank; }
  int size() const { return process_.world_size; }
  const dist::ProcessInfo& process() const { return process_; }
  Communicator& comm() { return *comm_; }
  dist::Store& store() { return *store_; }

  // Collective, optional, at the end of a job after this rank's last collective: this rank says in the store
  // that it is done. Rank 0 then waits (at most options.timeout_s, naming the missing after 5 s) until every
  // rank has said so, and throws TimeoutError naming those that did not: a rank stopped or hung after its
  // last collective would otherwise keep the launcher (ringrun, mpirun) waiting for it forever, while rank 0
  // exits 0; rank 0's error makes the launcher stop the job. The other ranks return at once.
  void finish();

 private:
  void meet(const std::string& backend);
  std::vector<int> awaitAll(const std::string& prefix, const char* what);
  void leave() noexcept;

  config::CommOptions options_;
  dist::ProcessInfo process_;
  std::unique_ptr<dist::Store> job_store_;  // the job's store (hosted here on rank 0 outside ringrun)
  std::unique_ptr<dist::Store> store_;      // job_store_'s keys of this group ("g<n>/"): declared before
  std::unique_ptr<Communicator> comm_;      // comm_, which uses it while it lives
};

}  // namespace ringtrain::comm
