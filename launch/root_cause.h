// Which failed rank caused a job's failure, and where the ranks say why they fail.
//
// A rank that sees a peer go fails too, with a broken connection or a collective timeout, and may exit
// before the peer that failed first has finished unwinding. Each rank gets a file of its own
// (RINGRUN_ERROR_FILE, ringtrain/core/failure_report.h) to record its failure before it lets go of its
// connections; ringrun reads them when a rank fails and names the root cause.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ringtrain/core/failure_report.h"

namespace ringtrain::launch {

// A private directory for the ranks' failure records, removed with this object. Without one (no writable
// temp directory) pathFor() gives "" and ringrun falls back to the order in which ranks ended. Its name,
// $TMPDIR/ringrun-failures-<pid namespace>-<pid>-XXXXXX, lets a later ringrun remove it where this one was
// killed before it could (removeRecordDirsOfGoneRingruns).
class FailureRecordDir {
 public:
  FailureRecordDir();  // under $TMPDIR, or /tmp
  ~FailureRecordDir();
  FailureRecordDir(const FailureRecordDir&) = delete;
  FailureRecordDir& operator=(const FailureRecordDir&) = delete;

  std::string pathFor(int attempt, int rank) const;
  bool available() const { return !dir_.empty(); }
  // Where it was to be made, for a message: "/scratch ($TMPDIR)" or "/tmp".
  const std::string& base() const { return base_; }

 private:
  std::string dir_;
  std::string base_;
};

// Removes the failure-record directories under `tmp` left by ringruns of PID namespace `pid_namespace`
// (core/process_state.h's pidNamespace(); containers may share a /tmp)
// whose pid no longer runs (killed with SIGKILL), when this user owns them. Directories of running
// ringruns, of other namespaces or users, and anything else are left alone.
void removeRecordDirsOfGoneRingruns(const std::string& tmp, const std::string& pid_namespace);

// A rank that failed on its own: it ended without being asked to stop, or it recorded a failure first.
struct FailedRank {
  int rank = 0;
  std::optional<FailureRecord> record;  // what it wrote, if anything
  std::optional<int> exit_code;         // how it ended, if it exited (not killed by a signal)
  bool killed_by_signal = false;        // by a signal ringrun did not send (the OOM killer, kill -9)
  bool stopped = false;                 // still running, but stopped (SIGSTOP, Ctrl-Z, a debugger)
  int64_t ended_ns = 0;                 // when ringrun saw it end, or saw it stopped (system clock)
};

// The index in `failed` (not empty) of the root cause: failures that are not consequences of another's
// (FailureRecord::isConsequence(); without a record, exit codes 3 and 4 are, and a rank killed by a signal
// or found stopped, which its peers wait for until they time out, is not) come first, then the earliest
// (the record's time, else when the rank was seen ending or stopped).
// Failures of one kind within kSameMomentNs of the earliest count as at once: the lowest rank of them is
// named (the same bad file on every rank gives the same report each run).
inline constexpr int64_t kSameMomentNs = 100'000'000;
size_t pickRootCause(const std::vector<FailedRank>& failed);

}  // namespace ringtrain::launch
