#include "core/process_state.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
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

std::vector<StoppedProcess> stoppedProcessesWith(const std::vector<std::string>& entries) {
  std::vector<StoppedProcess> found;
  try {
    const uid_t me = ::geteuid();
    std::error_code error;  // a process that ends during the listing is no reason to stop it
    for (std::filesystem::directory_iterator it("/proc", error), end; !error && it != end; it.increment(error)) {
      const std::filesystem::directory_entry& entry = *it;
      const std::string name = entry.path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      struct stat info {};
      if (::stat(entry.path().c_str(), &info) != 0 || info.st_uid != me) continue;
      const auto pid = static_cast<pid_t>(std::stol(name));
      std::string state = processState(pid);
      if (!isStoppedState(state)) continue;
      std::ifstream in(entry.path() / "environ", std::ios::binary);
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      StoppedProcess process{pid, std::move(state), {}};
      for (size_t at = 0; at < text.size();) {
        const size_t stop = std::min(text.find('\0', at), text.size());
        process.environment.push_back(text.substr(at, stop - at));
        at = stop + 1;
      }
      const auto holds = [&](const std::string& e) {
        return std::find(process.environment.begin(), process.environment.end(), e) != process.environment.end();
      };
      if (std::all_of(entries.begin(), entries.end(), holds)) found.push_back(std::move(process));
    }
  } catch (const std::exception&) {  // /proc unreadable, a process gone midway: what was found so far
  }
  return found;
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
