// Ranks as threads: runs one function per rank on its own thread, each with a Communicator made by the
// factory over one shared MemoryStore, and reports what each rank threw. Fast stand-in for a multi-process
// job in unit tests (Gloo's tcp transport over loopback is the same code path as between processes).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/config/config.h"
#include "ringtrain/dist/store.h"

namespace ringtrain::testing {

struct RankResult {
  std::string error;       // what() of the exception the rank threw; empty when it returned normally
  std::string error_type;  // "TimeoutError", "CommError", "ConfigError", "Error", "std::exception"
  bool ok() const { return error.empty() && error_type.empty(); }
};

// Runs body(rank) on `world` threads and joins them all.
std::vector<RankResult> runRankThreads(int world, const std::function<void(int rank)>& body);

// Each rank makes a communicator with `options` (backend gloo unless set) over `store` (a fresh
// MemoryStore when null) and runs body(comm).
std::vector<RankResult> runWithCommunicators(int world, const config::CommOptions& options,
                                             const std::function<void(comm::Communicator&)>& body,
                                             dist::Store* store = nullptr);

// A gtest failure naming each rank that threw, with what it threw.
void expectAllOk(const std::vector<RankResult>& results);

// CommOptions for tests: gloo, the given timeout, checks on.
config::CommOptions testCommOptions(double timeout_s = 20.0);

}  // namespace ringtrain::testing
