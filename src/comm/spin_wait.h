// How a waiting thread of the communicator waits: it polls for a while before it sleeps.
//
// Why: a sleeping thread is woken by the kernel, and on a virtual machine a vCPU with nothing to run halts;
// waking it goes through the host's scheduler. On the H100 machine's 16-vCPU VM (8 ranks, shared tables,
// traced) the barrier after the optimizer ended 1.90 ms after the last rank reached it, and a step's
// exchange 3.75 ms after the last rank arrived: a chain of wake-ups, not work. Polling, the same trace on
// another VM of that kind gave 0.06 ms and 1.26 ms. A thread that polls is running when its peer's notice
// lands.
//
// Polling costs a CPU while it lasts, so it is long only where each rank has a CPU to spare beside its
// compute thread; elsewhere (the dev and CI machines' 2 cores under several ranks) a short poll keeps the
// cores for the ranks' work. After the first microseconds a polling thread also yields, so that the rank's
// own loader and helper threads sharing its CPUs still run.
#pragma once

#include <sched.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace ringtrain::comm {

// The poll before every sleep when polling long does not pay (the default before comm.spin_us existed).
inline constexpr std::chrono::microseconds kShortSpin{50};
// comm.spin_us = -1 (auto) where each rank can count on two CPUs (chooseSpin): longer than an 8-rank step's
// usual spread of arrivals, so that waits end by polling, not by a wake-up.
inline constexpr std::chrono::microseconds kLongSpin{20000};

// The communication thread between collectives polls at most this long: it covers the gaps inside a
// step's finalize (the exchange enqueued right after the buckets, the barrier after the optimizer), while
// the forward that follows keeps its CPUs for the rank's loader and helper threads. On the H100 machine, 8
// ranks: 4 alternating pairs, 2 ms against polling the full kLongSpin, gave 1.04x the pairs/s on average.
inline constexpr std::chrono::microseconds kIdleSpin{2000};

// The poll budget for comm.spin_us (-1: auto) with `ranks_on_host` ranks of the job on this host (0 when
// unknown: ranks on several hosts, or a single rank, which waits for no one). Auto is long where this rank
// can count on two CPUs: the share ringrun bound it to (RINGTRAIN_CPUS, where the binding took and the
// host's CPUs can give every rank such a share), else its allowed CPUs divided among the host's ranks,
// either way within the whole CPUs of its cgroups' quota (docker --cpus) divided among them; else
// kShortSpin.
std::chrono::nanoseconds chooseSpin(int spin_us, int ranks_on_host);
// chooseSpin's rule on given facts: `allowed` CPUs in this process's affinity, `own_share` when ringrun
// bound it to CPUs of its own, `quota_cpus` the cgroup's CPU quota in CPUs (INT_MAX: none).
std::chrono::nanoseconds spinForCpus(int spin_us, int ranks_on_host, int allowed, bool own_share, int quota_cpus);

// Whether a rank whose affinity holds `allowed` CPUs owns the share ringrun named for it (RINGTRAIN_CPUS,
// e.g. "0-1"): the binding took (the affinity is no wider than the share) and the host's `online` CPUs can
// give each of the `ranks_on_host` ranks a share like it. A RINGTRAIN_CPUS left in the environment of
// ranks that share their CPUs fails the second test.
bool countsAsOwnShare(int allowed, const std::string& share, int ranks_on_host, int online);

// The CPU quota of this process's cgroup and those above it (v1 or v2), in whole CPUs (at least 1); INT_MAX
// where there is none.
int cpuQuotaOfThisProcess();
// The same from the text of a /proc/PID/cgroup and the cgroup file system's mount point (for tests).
int cpuQuotaOf(const std::string& proc_cgroup, const std::string& cgroup_root);

// The part of a wait of `timeout` spent polling: `spin`, or the whole timeout where that is shorter (compared
// in milliseconds: a timeout near milliseconds::max() does not fit in nanoseconds).
inline std::chrono::nanoseconds pollBudget(std::chrono::nanoseconds spin, std::chrono::milliseconds timeout) {
  if (timeout <= std::chrono::milliseconds::zero() || spin <= std::chrono::nanoseconds::zero()) return {};
  return timeout >= std::chrono::ceil<std::chrono::milliseconds>(spin) ? spin : std::chrono::nanoseconds(timeout);
}

// Tells the core this is a spin-wait (it yields the pipeline to a sibling hyperthread).
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls ready() for up to `budget`; true once it holds. Pure pause loops for the first kShortSpin, then a
// sched_yield() every 64 looks (a few microseconds apart), so that other runnable threads on this CPU get it.
template <typename Ready>
bool spinUntil(Ready&& ready, std::chrono::nanoseconds budget) {
  if (ready()) return true;
  if (budget <= std::chrono::nanoseconds::zero()) return false;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (uint32_t i = 1;; ++i) {
    if (ready()) return true;
    if ((i & 63) == 0) {  // the clock is read every 64 looks: a look is a load, a clock read ~20 ns
      const auto waited = Clock::now() - start;
      if (waited >= budget) return ready();
      if (waited >= kShortSpin) ::sched_yield();
    }
    cpuRelax();
  }
}

}  // namespace ringtrain::comm
