#include "core/process_state.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>

namespace ringtrain {

namespace {

// The text of /proc/<pid>/stat (or of one of its tasks) after the command name: "<state> <ppid> ..."; ""
// when unreadable (no such process). Reading it takes no lock of the process's memory.
std::string statFields(const std::filesystem::path& stat) {
  std::ifstream in(stat);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');  // the command name may hold spaces and parentheses
  return close == std::string::npos || close + 2 >= text.size() ? std::string() : text.substr(close + 2);
}

bool isStoppedLetter(char state) { return state == 'T' || state == 't'; }

std::string stateName(char state) {
  switch (state) {
    case 'R': return "running";
    case 'S': return "sleeping";
    case 'D': return "in uninterruptible I/O";
    case 'T': return "stopped";
    case 't': return "stopped by a debugger";
    case 'Z': return "exited, not yet reaped";
    case 'X': return "gone";
    default: return std::string("state ") + state;
  }
}

}  // namespace

std::string processState(pid_t pid) {
  const std::string fields = statFields("/proc/" + std::to_string(pid) + "/stat");
  return fields.empty() ? "gone" : stateName(fields[0]);
}

bool processGone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

bool isStoppedState(const std::string& state) { return state == "stopped" || state == "stopped by a debugger"; }

bool isStuckState(const std::string& state) {
  return isStoppedState(state) || state == "exited, not yet reaped" || state == "gone" ||
         state == "in uninterruptible I/O";
}

namespace {

// Whether every thread of the process is stopped ('T' or 't'): one in uninterruptible I/O may hold the
// memory map's lock that reading its environment waits for, without a timeout.
bool everyThreadStopped(const std::filesystem::path& process) {
  std::error_code error;
  int threads = 0;
  for (std::filesystem::directory_iterator it(process / "task", error), end; !error && it != end; it.increment(error)) {
    const std::string fields = statFields(it->path() / "stat");
    if (fields.empty() || !isStoppedLetter(fields[0])) return false;
    ++threads;
  }
  return !error && threads > 0;
}

}  // namespace

std::vector<StoppedProcess> stoppedChildrenWith(pid_t parent, const std::vector<std::string>& entries) {
  std::vector<StoppedProcess> found;
  const uid_t me = ::geteuid();
  std::error_code error;  // a process that ends during the listing is no reason to stop it
  for (std::filesystem::directory_iterator it("/proc", error), end; !error && it != end; it.increment(error)) {
    const std::filesystem::path& path = it->path();
    const std::string name = path.filename().string();
    if (name.empty() || name.size() > 9 || name.find_first_not_of("0123456789") != std::string::npos) continue;
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 || info.st_uid != me) continue;
    const std::string fields = statFields(path / "stat");
    std::istringstream parsed(fields);
    char state = 0;
    long long ppid = -1;
    if (!(parsed >> state >> ppid) || ppid != parent || !isStoppedLetter(state)) continue;
    if (!everyThreadStopped(path)) continue;
    std::ifstream in(path / "environ", std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    StoppedProcess process{static_cast<pid_t>(std::stol(name)), stateName(state), {}};
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
  return found;
}

RingrunOfProcess ringrunOfThisProcess() {
  RingrunOfProcess ringrun;
  const char* launcher = std::getenv("RINGTRAIN_LAUNCHER");
  const char* pid = std::getenv("RINGRUN_PID");
  const char* token = std::getenv("RINGTRAIN_JOB_TOKEN");
  const char* attempt = std::getenv("RINGTRAIN_RESTART_COUNT");
  if (launcher == nullptr || std::string_view(launcher) != "ringrun" || pid == nullptr || token == nullptr ||
      attempt == nullptr) {
    return ringrun;
  }
  char* end = nullptr;
  const long value = std::strtol(pid, &end, 10);
  if (end == pid || *end != '\0' || value <= 1) return ringrun;
  ringrun.pid = static_cast<pid_t>(value);
  ringrun.token = token;
  ringrun.attempt = attempt;
  return ringrun;
}

std::string describeStuckRingrun(const RingrunOfProcess& ringrun) {
  if (ringrun.pid == 0) return "";
  const std::string state = processState(ringrun.pid);
  if (!isStuckState(state)) return "";
  return "this machine's ringrun (pid " + std::to_string(ringrun.pid) + ") is " + state;
}

std::string describeStoppedRanks(const RingrunOfProcess& ringrun, const std::vector<int>& ranks) {
  if (ranks.empty() || ringrun.pid == 0) return "";
  const std::vector<StoppedProcess> stopped = stoppedChildrenWith(
      ringrun.pid, {"RINGTRAIN_JOB_TOKEN=" + ringrun.token, "RINGTRAIN_RESTART_COUNT=" + ringrun.attempt});
  std::string out;
  for (const int r : ranks) {
    const std::string entry = "RANK=" + std::to_string(r);
    for (const StoppedProcess& process : stopped) {
      if (std::find(process.environment.begin(), process.environment.end(), entry) == process.environment.end()) {
        continue;
      }
      out += (out.empty() ? "" : ", ") + ("rank " + std::to_string(r) + "'s process (pid " +
                                          std::to_string(process.pid) + ", this machine) is " + process.state);
      break;
    }
  }
  return out;
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
