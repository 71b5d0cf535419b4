// Rank-prefixed logging. Every line carries the process's rank ("[rank 1/4]") once it is known, so the
// interleaved output of a job can be read. The level comes from RINGTRAIN_LOG_LEVEL until the config is read,
// then from log.level, unless that is its default and RINGTRAIN_LOG_LEVEL is set.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace ringtrain::log {

// Creates the process-wide logger (stderr) if needed and applies RINGTRAIN_LOG_LEVEL when set.
void init();
// Sets "[rank R/N]" as the prefix of every following line; rank < 0 removes it.
void setRank(int rank, int world_size);
// Sends every following line to `sink` instead of stderr, in the same format (ringrun: its console writer,
// which never blocks the thread that logs).
void useSink(spdlog::sink_ptr sink);
// Accepts trace, debug, info, warn, error, off; throws ConfigError otherwise.
void setLevel(const std::string& level);
// The config's log.level: set, unless it is `default_level` and RINGTRAIN_LOG_LEVEL is set (a job file that
// never named a level must not override the environment's; one that names the default value cannot be told
// from it, and yields too).
void setConfiguredLevel(const std::string& level, const std::string& default_level);
bool isValidLevel(const std::string& level);

}  // namespace ringtrain::log

namespace ringtrain {
// Shorthands; they use spdlog's default logger, which log::init() configures.
using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::trace;
using spdlog::warn;
}  // namespace ringtrain
