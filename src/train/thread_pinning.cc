#include "train/thread_pinning.h"

#include <sched.h>
#include <sys/sysinfo.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "comm/spin_wait.h"
#include "core/cpu_list.h"
#include "ringtrain/core/error.h"

namespace ringtrain::train {

namespace {
cpu_set_t setOf(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const int cpu : cpus) CPU_SET(cpu, &set);
  return set;
}
}  // namespace

int pinThreads(int cpu, const std::vector<int>& others) {
  const cpu_set_t mine = setOf({cpu});
  const cpu_set_t rest = setOf(others);
  const pid_t self = static_cast<pid_t>(::gettid());
  if (::sched_setaffinity(self, sizeof(mine), &mine) != 0) {
    RT_THROW(Error, "run.pin_threads: cannot put the training thread on CPU ", cpu, ": ", std::strerror(errno));
  }
  int moved = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    const pid_t tid = static_cast<pid_t>(std::atoi(task.path().filename().c_str()));
    if (tid <= 0 || tid == self) continue;
    if (::sched_setaffinity(tid, sizeof(rest), &rest) == 0) ++moved;  // else it ended meanwhile
  }
  return moved;
}

ThreadPinning::ThreadPinning(bool asked, int ranks_on_host) : asked_(asked) {
  if (!asked) return;
  cpus_ = allowedCpus();
  const char* share = std::getenv("RINGTRAIN_CPUS");
  if (share == nullptr ||
      !comm::countsAsOwnShare(static_cast<int>(cpus_.size()), share, ranks_on_host, ::get_nprocs())) {
    why_off_ = fmt::format("this rank is not bound to CPUs of its own (it may run on {} CPUs: {}); start the ranks "
                           "with ringrun --bind-to cores", cpus_.size(), cpuListText(cpus_));
  } else if (cpus_.size() < 2) {
    why_off_ = fmt::format("this rank has one CPU ({}): nothing to keep apart", cpuListText(cpus_));
  }
}

std::string ThreadPinning::sweep() {
  if (!enabled()) return "";
  const std::vector<int> others(cpus_.begin() + 1, cpus_.end());
  const int moved = pinThreads(cpus_.front(), others);
  return fmt::format("training thread on CPU {}, {} other thread(s) on CPU {}", cpus_.front(), moved, cpuListText(others));
}

}  // namespace ringtrain::train
