#include "ringtrain/core/allocator.h"

#include <cstdlib>
#include <cstring>

// Under a sanitizer (scripts/sanitize.sh) malloc is the sanitizer's: glibc's tuning and trimming would act
// on arenas nobody allocates from, and malloc_trim crashes there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define RINGTRAIN_GLIBC_MALLOC 0
#elif defined(__GLIBC__)
#define RINGTRAIN_GLIBC_MALLOC 1
#include <malloc.h>
#else
#define RINGTRAIN_GLIBC_MALLOC 0
#endif

namespace ringtrain {

bool keepFreedMemoryInProcess() {
  const char* opt_out = std::getenv("RINGTRAIN_MALLOC_DEFAULTS");
  if (opt_out != nullptr && std::strcmp(opt_out, "1") == 0) return false;
#if RINGTRAIN_GLIBC_MALLOC
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit; blocks below it come from the heap and
  // are reused. Setting it also turns off glibc's dynamic threshold. Freed memory at the top of a heap
  // is returned to the kernel only above 1 GiB, and each heap grows by 64 MiB at a time.
  bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;
  ok = mallopt(M_TOP_PAD, 64 << 20) == 1 && ok;
  return ok;
#else
  return false;
#endif
}

void releaseFreedMemory() {
#if RINGTRAIN_GLIBC_MALLOC
  malloc_trim(0);
#endif
}

}  // namespace ringtrain
