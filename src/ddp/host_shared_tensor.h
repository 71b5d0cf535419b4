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

#include <cstddef>
#include <string>

#include <ATen/core/Tensor.h>

#include "core/huge_pages.h"

#include "ringtrain/comm/communicator.h"

namespace ringtrain::ddp::detail {

// Whether the shared memory comes from the host's pool of reserved 2 MiB pages (hugetlbfs: sysctl
// vm.nr_hugepages). Why: on the H100 machines a lone rank on (transparent) huge pages trained 1.35x faster than on
// 4 KiB ones, and shared memory gets no transparent huge pages there (shmem_enabled "never"), so 8 ranks on
// shared tables ran their forward and backward at the 4 KiB speed. The pool is empty unless an administrator
// fills it, and a cgroup may allow a process none of it: then the memory stays on ordinary pages and
// `why_not` says so.
struct HugePages {
  bool asked = false;
  bool* used = nullptr;            // if given: set on every rank, whether the memory is on huge pages
  std::string* why_not = nullptr;  // if given: set on rank 0 where asked for and not used (too few in the pool)
};

// Where the tensors shared with HugePages asked went, for rank 0 to say: how many were large enough to ask
// the pool, how many got its pages, the pages all of them need, and why the first that did not get them.
// The pool's counts are read when the tally is made, before the tensors take pages from it.
class HugePageTally {
 public:
  HugePageTally();  // the pool as /proc/meminfo has it now
  HugePageTally(long long pool_total, long long pool_free) : pool_total_(pool_total), pool_free_(pool_free) {}
  void add(size_t bytes, bool on_huge_pages, const std::string& why_not);
  size_t asked() const { return asked_; }
  // "the <what> are on 2 MiB pages ...", "the <what> are on 4 KiB pages (why): they need N ... sysctl
  // vm.nr_hugepages=M ...", "k of the n <what> ..."; "" when none was large enough to ask. `what` is a plural
  // noun: "shared sparse tables".
  std::string report(const std::string& what) const;

 private:
  long long pool_total_ = 0, pool_free_ = 0;
  size_t asked_ = 0, on_huge_ = 0, pages_ = 0;
  std::string why_not_;
};

// Collective over `comm`, whose ranks must share a host (comm.canReadPeerMemory()). Returns a contiguous CPU
// tensor of `source`'s shape and dtype on memory mapped by every rank, holding rank 0's `source`. A failure
// on any rank (memfd, open, mmap, a size or dtype that differs from rank 0's) throws on every rank, naming
// the rank, `what` and the cause.
// With `huge.asked`, memory of at least kHugePageMinBytes (core/huge_pages.h) comes from the huge-page pool
// where it has enough.
at::Tensor shareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what,
                       const HugePages& huge = {});

// The same, but a failure that every rank agreed on (memfd, open, mmap, sizes) returns an undefined tensor and
// sets `why` on every rank, so that callers can fall back together. Communication failures still throw.
at::Tensor tryShareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what,
                          std::string& why, const HugePages& huge = {});

}  // namespace ringtrain::ddp::detail
