#include "root_cause.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <tuple>

namespace ringtrain::launch {

FailureRecordDir::FailureRecordDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/ringrun-failures-XXXXXX";
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
  const auto key = [](const FailedRank& f) {
    const bool consequence = f.record ? f.record->isConsequence()
                                      : !f.killed_by_signal && !f.stopped && f.exit_code &&
                                            isConsequentialExitCode(*f.exit_code);
    const int64_t when = f.record ? f.record->time_ns : f.ended_ns;
    return std::make_tuple(consequence, when, f.rank);
  };
  size_t best = 0;
  for (size_t i = 1; i < failed.size(); ++i) {
    if (key(failed[i]) < key(failed[best])) best = i;
  }
  return best;
}

}  // namespace ringtrain::launch
