#include "core/exit_on_signal.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <utility>

namespace ringtrain {

ExitOnSignal::ExitOnSignal(const sigset_t& signals, std::function<std::string(int)> say, int exit_code)
    : watcher_([this, signals, say = std::move(say), exit_code] {
        // The tick bounds how long the destructor's join waits: a guard ends at most this long after disarming.
        const timespec tick{0, 50 * 1000 * 1000};
        while (armed_.load()) {
          const int sig = sigtimedwait(&signals, nullptr, &tick);
          if (sig > 0) {  // one of `signals` (-1: the tick passed)
            std::fprintf(stderr, "ringtrain: %s\n", say(sig).c_str());
            std::fflush(stderr);
            std::_Exit(exit_code == kSignalExitCode ? 128 + sig : exit_code);
          }
        }
      }) {}

ExitOnSignal::~ExitOnSignal() {
  armed_ = false;
  watcher_.join();
}

}  // namespace ringtrain
