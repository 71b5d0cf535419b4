// Rank-prefixed logging. Every line carries the process's rank ("[rank 1/4]") once it is known, so the
// interleaved output of a job can be read. The level comes from the config (log.level) or, before the
// config is read, from RINGTRAIN_LOG_LEVEL.
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
