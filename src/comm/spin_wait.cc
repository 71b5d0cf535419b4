#include "comm/spin_wait.h"

#include <sched.h>
#include <sys/sysinfo.h>

namespace ringtrain::comm {

std::chrono::nanoseconds chooseSpin(int spin_us, int ranks_on_host) {
  if (spin_us >= 0) return std::chrono::microseconds(spin_us);
  if (ranks_on_host <= 0) return kShortSpin;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  const int allowed = ::sched_getaffinity(0, sizeof(mine), &mine) == 0 ? CPU_COUNT(&mine) : 1;
  const int online = ::get_nprocs();
  return online >= 2 * ranks_on_host && allowed >= 2 ? std::chrono::nanoseconds(kLongSpin)
                                                       : std::chrono::nanoseconds(kShortSpin);
}

}  // namespace ringtrain::comm
