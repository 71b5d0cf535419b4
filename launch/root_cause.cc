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
