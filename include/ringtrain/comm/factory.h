// Picks and builds the Communicator a process uses. Which backends exist depends on the build
// (ringtrain/build_config.h); asking for one that was not built is a ConfigError, not a crash.
//
//   comm.backend: auto -> nccl when the tensors live on a CUDA device and NCCL was built, else gloo
//                 gloo | mpi | nccl -> that backend
//   comm.allreduce_algorithm: ring -> allreduceAsync runs ringtrain's ring over the backend's
//                 sendAsync/recvAsync (host buffers); native -> the backend's own allreduce. NCCL and CUDA
//                 buffers always use native.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/config/config.h"
#include "ringtrain/dist/process_info.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::comm {

// Backends compiled into this build, e.g. {"gloo", "mpi"}.
std::vector<std::string> builtBackends();

// The backend comm.backend selects for tensors on `device` ("auto" resolved). ConfigError when the named
// backend was not built or does not fit (nccl for host tensors).
std::string resolveBackend(const config::CommOptions& options, const Device& device);

// Creates the communicator of rank process.rank in a group of process.world_size and connects it (blocks
// until every rank has joined, at most comm.timeout_s; then TimeoutError naming the ranks that did not).
// `store` is the job's rendezvous store (a TcpStoreClient, or a MemoryStore shared by ranks-as-threads);
// the communicator keeps a reference for hang diagnosis, so it must outlive the communicator. Several
// communicators may be made on one store as long as every rank makes them in the same order.
// `device` is where the buffers will live (host by default; NCCL needs its cuda_index).
// mpi takes rank and size from MPI_COMM_WORLD and checks they match `process`.
std::unique_ptr<Communicator> makeCommunicator(const config::CommOptions& options,
                                               const dist::ProcessInfo& process, dist::Store& store,
                                               Device device = {});

// The allreduce a communicator runs for comm.allreduce_algorithm: ring. It runs on the communication
// thread, must leave op(all ranks) in `buffer` on every rank, and may use comm.sendAsync/recvAsync with
// tags >= kReservedTagBase. Errors are thrown (they reach the caller's Work::wait).
using AllreduceAlgorithm = std::function<void(Communicator& comm, Buffer buffer, ReduceOp op)>;

}  // namespace ringtrain::comm
