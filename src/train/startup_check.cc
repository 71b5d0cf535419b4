#include "ringtrain/train/startup_check.h"

#include <fmt/format.h>

#include <cstdint>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/core/error.h"

namespace ringtrain::train {
namespace {

std::vector<uint8_t> bytesOf(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string textOf(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

}  // namespace

void checkRanksAgree(comm::Communicator& comm, const config::JobConfig& job, const std::string& model_layout,
                     const std::string& corpus) {
  // One small exchange in the common case: the hash of every key (the job's identity leaves some out, such as
  // the sparse sync mode and the eval section, but every rank must share them), world size, layout, corpus.
  const std::string mine =
      fmt::format("config {}; world size {}; model {}; corpus {}", config::fullHash(job), comm.size(), model_layout, corpus);
  const auto all = comm.allgatherBytes(bytesOf(mine));
  bool agree = true;
  for (const auto& other : all) agree = agree && other == all[0];
  if (agree) return;

  // Someone differs: every rank saw the same gathered data, so every rank takes this path together and
  // exchanges the full canonical YAML to name the keys.
  const auto yamls = comm.allgatherBytes(bytesOf(config::toYaml(job)));
  const config::JobConfig reference = config::loadString(textOf(yamls[0]), "rank 0's config");
  const auto reference_values = config::flatten(reference);
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    const config::JobConfig other = config::loadString(textOf(yamls[r]), fmt::format("rank {}'s config", r));
    const auto keys = config::differingKeys(reference, other);
    const auto other_values = config::flatten(other);
    std::vector<std::string> parts;
    for (const std::string& key : keys) {
      for (size_t i = 0; i < reference_values.size(); ++i) {
        if (reference_values[i].first == key) {
          parts.push_back(fmt::format("{} (rank 0: '{}', rank {}: '{}')", key, reference_values[i].second, r,
                                      other_values[i].second));
        }
      }
    }
    if (!parts.empty()) {
      RT_THROW(ConfigError, "ranks run different configurations: rank ", r, " differs from rank 0 in ",
               fmt::format("{}", fmt::join(parts, ", ")));
    }
    RT_THROW(ConfigError, "ranks disagree before the first step: rank 0 has '", textOf(all[0]), "', rank ", r,
             " has '", textOf(all[r]), "'", corpus.empty() ? "" : " (each rank reads data.corpus itself: a corpus that "
             "differs between nodes, or changed while ranks started, trains mismatched items)");
  }
}

}  // namespace ringtrain::train
