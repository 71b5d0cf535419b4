// How a process of a job reaches the job's store, whoever started it:
//   - under ringrun (ProcessInfo::launcher == "ringrun"): the launcher on node 0 hosts the TcpStoreServer
//     at MASTER_ADDR:MASTER_PORT for the whole job, including restarts; every rank is a client.
//   - a job of one outside ringrun (alone, mpirun -np 1, WORLD_SIZE=1): an in-memory store; no port is taken.
//   - otherwise (mpirun, srun, torchrun, RANK/WORLD_SIZE set by hand): rank 0 hosts a TcpStoreServer inside its own
//     process, bound to MASTER_ADDR:MASTER_PORT, and is also a client of it; the other ranks connect,
//     retrying until `timeout`. The token is RINGTRAIN_JOB_TOKEN when set (export the same value on every
//     node), else empty: then anyone who can reach MASTER_ADDR:MASTER_PORT can use the store, so keep it on
//     loopback or a private network, or set the token. Under torchrun (TORCHELASTIC_RUN_ID set), whose own
//     store already listens on MASTER_PORT, rank 0 hosts ringtrain's store on MASTER_PORT + 1.
// Outside ringrun the store lives in rank 0's process, so rank 0 must not drop it while others still use it:
// end with a barrier in the store (comm::JobGroup does, as it leaves; bench/store_join.cc times one).
// The returned store scopes every key under "r<restart_count>/", so a job relaunched by
// `ringrun --max-restarts` never reads the keys of its previous attempt.
#pragma once

#include <chrono>
#include <memory>

#include "ringtrain/dist/process_info.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::dist {

// Throws CommError when the store cannot be hosted or reached within `timeout`.
std::unique_ptr<Store> connectStore(const ProcessInfo& info, std::chrono::milliseconds timeout);

}  // namespace ringtrain::dist
