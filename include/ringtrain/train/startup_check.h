// Before the first step every rank must be running the same job: same resolved config (by hash), same
// world size, same model layout, same corpus (lines, items and the item list's hash: every rank reads the
// corpus itself, and copies on different nodes, or a file rewritten between the ranks' reads, could differ). A difference stops every rank with a ConfigError that names the
// differing keys and their values on rank 0 and on the differing rank, instead of a hang or a silent
// divergence later.
#pragma once

#include <string>

#include "ringtrain/config/config.h"

namespace ringtrain::comm {
class Communicator;
}

namespace ringtrain::train {

// Collective: every rank calls it with its own view. `model_layout` and `corpus` are one-line descriptions
// (corpusFingerprint()).
void checkRanksAgree(comm::Communicator& comm, const config::JobConfig& job, const std::string& model_layout,
                     const std::string& corpus = "");

}  // namespace ringtrain::train
