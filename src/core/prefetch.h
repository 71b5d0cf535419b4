// Software prefetch for loops that visit embedding-table rows in the batch's random order. Such a loop
// waits on one cache miss after another: the hardware prefetchers follow strides, not row ids. Asking for
// the row a few iterations ahead lets its loads overlap the current row's arithmetic. Over tables shared by
// the ranks of a host each miss costs more, since most rows were last written by another core (their
// owner's optimizer).
#pragma once

#include <cstdint>

namespace ringtrain::detail {

// Rows ahead for a loop that does one row's worth of arithmetic per row (an axpy, an optimizer update):
// about the number of misses a core keeps in flight, with a margin.
inline constexpr int64_t kRowsAhead = 8;

// Starts loading the cache lines of [p, p + bytes). kForWrite asks for them in a state that can be written.
template <bool kForWrite = false>
inline void prefetchBytes(const void* p, int64_t bytes) {
  constexpr uintptr_t kLine = 64;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(kLine - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes);
  for (uintptr_t line = begin; line < end; line += kLine) {
    __builtin_prefetch(reinterpret_cast<const void*>(line), kForWrite ? 1 : 0, 3);
  }
}

// Row `id` of a row-major table of `width` elements per row.
template <bool kForWrite = false, typename T>
inline void prefetchRow(const T* table, int64_t id, int64_t width) {
  prefetchBytes<kForWrite>(table + id * width, width * static_cast<int64_t>(sizeof(T)));
}

}  // namespace ringtrain::detail
