#include "core/process_state.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <fstream>
#include <iterator>

namespace ringtrain {

std::string processState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos || close + 2 >= text.size()) return "gone";
  switch (text[close + 2]) {
    case 'R': return "running";
    case 'S': return "sleeping";
    case 'D': return "in uninterruptible I/O";
    case 'T': return "stopped";
    case 't': return "stopped by a debugger";
    case 'Z': return "exited, not yet reaped";
    case 'X': return "gone";
    default: return std::string("state ") + text[close + 2];
  }
}

bool processGone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

bool isStoppedState(const std::string& state) { return state == "stopped" || state == "stopped by a debugger"; }

bool isStuckState(const std::string& state) {
  return isStoppedState(state) || state == "exited, not yet reaped" || state == "gone" ||
         state == "in uninterruptible I/O";
}

std::string pidNamespace() {
  char link[64] = {};
  const ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof(link) - 1);
  if (n <= 0) return "";
  const std::string text(link, static_cast<size_t>(n));  // "pid:[4026531836]"
  const size_t open = text.find('['), close = text.find(']');
  if (open == std::string::npos || close == std::string::npos || close <= open + 1) return "";
  return text.substr(open + 1, close - open - 1);
}

std::string processAddress() {
  std::string boot_id;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot_id;
  const std::string ns = pidNamespace();
  // Without either, no other process can be recognised as a neighbour: the address is unique to this one.
  if (boot_id.empty() || ns.empty()) return "unknown-" + std::to_string(::getpid()) + " " + std::to_string(::getpid());
  return boot_id + "/pid:[" + ns + "] " + std::to_string(::getpid());
}

}  // namespace ringtrain
