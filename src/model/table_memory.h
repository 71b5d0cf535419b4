// Memory for embedding tables (and per-row optimizer state): on transparent huge pages where run.huge_pages
// asks for it.
//
// Why: a training step reads and writes rows scattered over tables of tens of megabytes (the reference
// workload's two tables are 51 MB). With 4 KiB pages nearly every row touched is a TLB miss, and on a
// virtual machine each miss walks two page tables; a 2 MiB page covers 512 times as much. The kernel gives
// huge pages only to memory that asks (transparent_hugepage "madvise", the usual setting), and LibTorch
// 1.13's allocator never asks. Tables mapped from memory shared by the ranks (ddp.sparse_sync shared) are
// shmem, which these kernels give no transparent huge pages (shmem_enabled "never"): those come from the
// host's reserved pool instead, where an administrator filled it (ddp/host_shared_tensor.h, HugePages).
#pragma once

#include <cstddef>

#include <ATen/core/Tensor.h>

#include "core/huge_pages.h"

namespace ringtrain::model {

// Tables under kHugePageMinBytes (core/huge_pages.h) stay on LibTorch's allocator.
// Under AddressSanitizer (scripts/sanitize.sh) tables stay on malloc, whose blocks it surrounds with
// poisoned bytes: a mapping of its own would let a row written past a table's end go unseen.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kTablesMayMap = false;
#else
inline constexpr bool kTablesMayMap = true;
#endif

// An uninitialized contiguous CPU tensor. With `huge_pages` and at least kHugePageMinBytes, its own
// mapping, 2 MiB aligned and advised MADV_HUGEPAGE (the advice failing, e.g. without THP in the kernel,
// leaves ordinary pages; a mapping that fails throws ringtrain::Error naming the size and why); otherwise,
// and under AddressSanitizer, at::empty.
at::Tensor emptyTable(at::IntArrayRef sizes, at::ScalarType dtype, bool huge_pages);

// Whether `t`'s memory is one of emptyTable's huge-page mappings.
bool onHugePageTable(const at::Tensor& t);

// Zeros shaped like `like`, in memory of the same kind: a huge-page mapping where `like` is in one (so an
// optimizer's per-row state follows its table), at::zeros_like otherwise.
at::Tensor zerosLikeTable(const at::Tensor& like);

}  // namespace ringtrain::model
