#include "serve/lower_priority.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <thread>

namespace ringtrain::serve {

int currentThreadNice() {
  errno = 0;
  // PRIO_PROCESS with a thread id addresses that thread alone on Linux.
  return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
}

void lowerThisThreadPriority(int nice_increment) {
  const int nice = std::min(19, currentThreadNice() + std::max(0, nice_increment));
  // Best effort: if the kernel refuses, the thread goes on, only not nicer.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
}

void runWithLowerPriority(int nice_increment, const std::function<void()>& work) {
  std::exception_ptr failed;
  std::thread worker([&] {
    lowerThisThreadPriority(nice_increment);
    try {
      work();
    } catch (...) {
      failed = std::current_exception();
    }
  });
  worker.join();
  if (failed) std::rethrow_exception(failed);
}

}  // namespace ringtrain::serve
