#include "root_cause.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <tuple>

#include "core/process_state.h"

namespace ringtrain::launch {

namespace {

constexpr const char* kPrefix = "ringrun-failures-";

}  // namespace

void removeRecordDirsOfGoneRingruns(const std::string& tmp, const std::string& pid_namespace) {
  if (pid_namespace.empty()) return;
  const std::string mine = std::string(kPrefix) + pid_namespace + "-";
  // Best effort, and never a throw: an unreadable entry ends the sweep, not ringrun.
  std::error_code ec;
  for (std::filesystem::directory_iterator it(tmp, ec), done; !ec && it != done; it.increment(ec)) {
    const std::filesystem::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (name.rfind(mine, 0) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + mine.size(), &end, 10);
    if (pid <= 0 || end == nullptr || *end != '-' || pid == ::getpid()) continue;
    if (!processGone(static_cast<pid_t>(pid))) continue;  // that ringrun still runs
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) continue;
    std::error_code ignored;
    std::filesystem::remove_all(entry.path(), ignored);
  }
}

FailureRecordDir::FailureRecordDir() {
  const char* env = std::getenv("TMPDIR");
  const bool from_env = env != nullptr && *env != '\0';
  const std::string tmp = from_env ? env : "/tmp";
  base_ = tmp + (from_env ? " ($TMPDIR)" : "");
  // A ringrun killed with SIGKILL cannot remove its directory: the next one on this host removes those of
  // ringruns that are gone, which it can tell by the namespace and pid in the name.
  const std::string ns = pidNamespace();
  removeRecordDirsOfGoneRingruns(tmp, ns);
  std::string pattern = tmp + "/" + kPrefix + (ns.empty() ? "" : ns + "-" + std::to_string(::getpid()) + "-") + "XXXXXX";
  if (::mkdtemp(pattern.data()) != nullptr) dir_ = pattern;
}

FailureRecordDir::~FailureRecordDir() {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string FailureRecordDir::pathFor(int attempt, int rank) const {
  if (dir_.empty()) return "";
  return dir_ + "/attempt" + std::to_string(attempt) + "-rank" + std::to_string(rank) + ".json";
}

size_t pickRootCause(const std::vector<FailedRank>& failed) {
  const auto consequence = [](const FailedRank& f) {
    return f.record ? f.record->isConsequence()
                    : !f.killed_by_signal && !f.stopped && f.exit_code && isConsequentialExitCode(*f.exit_code);
  };
  const auto when = [](const FailedRank& f) { return f.record ? f.record->time_ns : f.ended_ns; };
  size_t best = 0;
  for (size_t i = 1; i < failed.size(); ++i) {
    if (std::make_tuple(consequence(failed[i]), when(failed[i])) <
        std::make_tuple(consequence(failed[best]), when(failed[best]))) {
      best = i;
    }
  }
  // Ranks failing alike at one moment (the same bad checkpoint or setting on every rank): the lowest is
  // named, so that the report does not change from run to run with which one happened to be first.
  size_t named = best;
  for (size_t i = 0; i < failed.size(); ++i) {
    if (consequence(failed[i]) == consequence(failed[best]) && when(failed[i]) - when(failed[best]) < kSameMomentNs &&
        failed[i].rank < failed[named].rank) {
      named = i;
    }
  }
  return named;
}

}  // namespace ringtrain::launch
