// Tensors that every rank on one host maps from the same memory, for the shared sparse-row mode
// (ddp.sparse_sync: shared): one copy of an embedding table and its optimizer state on the host instead of
// one per rank, each rank updating only the rows it owns.
//
// Rank 0 creates a memfd of the tensor's size, copies its tensor in, and publishes (pid, descriptor number)
// through the communicator; the other ranks open it through /proc/PID/fd/N and map it MAP_SHARED. That is
// the path comm::PeerMemory already proved usable between these ranks (comm.canReadPeerMemory()), so it
// needs no name in /dev/shm and leaves nothing behind when a rank dies: the memory lives as long as one
// mapping does.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"

namespace ringtrain::ddp::detail {

// Collective over `comm`, whose ranks must share a host (comm.canReadPeerMemory()). Returns a contiguous CPU
// tensor of `source`'s shape and dtype on memory mapped by every rank, holding rank 0's `source`. A failure
// on any rank (memfd, open, mmap, a size or dtype that differs from rank 0's) throws on every rank, naming
// the rank, `what` and the cause.
at::Tensor shareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what);

// The same, but a failure that every rank agreed on (memfd, open, mmap, sizes) returns an undefined tensor and
// sets `why` on every rank, so that callers can fall back together. Communication failures still throw.
at::Tensor tryShareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what,
                          std::string& why);

}  // namespace ringtrain::ddp::detail
