// The huge pages large tables go on, private ones (model/table_memory.h, transparent huge pages) and those
// the ranks of a host share (ddp/host_shared_tensor.h, the host's reserved pool): their size and the
// smallest table worth one.
#pragma once

#include <cstddef>

namespace ringtrain {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;
// Smaller tables stay on 4 KiB pages: a few megabytes fit the TLB's reach without huge ones.
inline constexpr size_t kHugePageMinBytes = 2 * kHugePageBytes;

// `n` rounded up to a multiple of `to`.
inline constexpr size_t roundUpToMultiple(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace ringtrain
