// What a failing rank tells its launcher: when it failed, with which exit code, and why.
//
// A rank whose peer fails first sees only a broken connection or a collective timeout, and may exit before
// the rank that failed first has finished unwinding: the launcher, seeing that consequence end first, would
// blame the wrong rank. So ringrun gives each rank a file to write (RINGRUN_ERROR_FILE), and the first
// recordFailure() of a process writes it (atomically: a temp file renamed over it) before the rank lets go
// of its connections; ringrun then names the root cause, as torchrun does with its error files: failures that
// are not consequences (exit codes kExitCommFailure and kExitTimeout are) before those that are, and the
// earliest of each kind first.
// Without the variable (mpirun, a rank started by hand) nothing is written. Either way the listeners hear it:
// each communicator tells its peers through the job's store, so that a peer whose collective then fails
// says which rank failed first, and why (comm/arrival_board.h).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>

namespace ringtrain {

inline constexpr const char* kErrorFileEnv = "RINGRUN_ERROR_FILE";

struct FailureRecord {
  int64_t time_ns = 0;  // when it was recorded, on the system clock (ns since the epoch)
  int exit_code = 0;    // what the process is about to exit with
  std::string message;
  bool follows_peer = false;  // the rank says another rank failed first (Error::followsPeer())

  // Follows from another rank's failure: said so, or a broken connection or timeout (exit code 3 or 4).
  bool isConsequence() const;
};

// Writes this process's first failure to $RINGRUN_ERROR_FILE and tells the listeners; later calls (the
// same error caught again further out) do nothing. `exit_code` is the code the process is about to exit
// with (1-255). Thread-safe; never throws.
void recordFailure(int exit_code, const std::string& message, bool follows_peer = false) noexcept;
// The same for a caught exception: a ringtrain::Error with its exit code and followsPeer(), anything else
// as an internal error (exit code 1). For a program of one's own, in a catch inside its JobGroup's scope:
//   catch (const std::exception& e) { ringtrain::recordFailure(e); throw; }
void recordFailure(const std::exception& e) noexcept;

// Hears the process's first recorded failure, on the recording thread, with the registry locked: it must be
// quick and bounded (a store write under a dist::StoreCallCap), must not call recordFailure(),
// addFailureListener() or removeFailureListener() (a deadlock), and what it throws is dropped. add returns
// an id for remove, which waits for a call in progress.
using FailureListener = std::function<void(const FailureRecord& failure)>;
uint64_t addFailureListener(FailureListener listener);
void removeFailureListener(uint64_t id);

// The record at `path`; nullopt when there is none or it cannot be read.
std::optional<FailureRecord> readFailureRecord(const std::string& path);

// True for an exit code that follows from another rank's failure (a broken connection, a collective timeout).
bool isConsequentialExitCode(int exit_code);

}  // namespace ringtrain
