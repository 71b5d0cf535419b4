// Constructors of the backends, for the factory only. Each is defined in its backend's file, which is
// compiled only when that backend is built (so the factory guards calls with RINGTRAIN_WITH_*).
#pragma once

#include <memory>
#include <string>

#include "communicator_base.h"

namespace ringtrain::comm {

// `store` is the communicator's own key space (a PrefixStore over the job's store). `hostname` is the address the
// other ranks reach this one at (127.0.0.1 on one node).
std::unique_ptr<CommunicatorBase> makeGlooCommunicator(const config::CommOptions& options, int rank, int size,
                                                       const std::string& hostname, std::unique_ptr<dist::Store> store);
// Rank and size come from MPI_COMM_WORLD; `expected_rank/size` (from the launcher) must match.
std::unique_ptr<CommunicatorBase> makeMpiCommunicator(const config::CommOptions& options, int expected_rank,
                                                      int expected_size, std::unique_ptr<dist::Store> store);
std::unique_ptr<CommunicatorBase> makeNcclCommunicator(const config::CommOptions& options, int rank, int size,
                                                       int cuda_index, std::unique_ptr<dist::Store> store);

}  // namespace ringtrain::comm
