// Rank-prefixed logging. Every line carries the process's rank ("[rank 1/4]") once it is known, so the
// interleaved output of a job can be read. The level comes from RINGTRAIN_LOG_LEVEL until the config is read,
// then from log.level, unless that is its default and RINGTRAIN_LOG_LEVEL is set.
#pragma once

#include <string>
#include <utility>

#include <spdlog/spdlog.h>

namespace ringtrain::log {

// ringtrain's own logger, "ringtrain", to stderr in ringtrain's format (RINGTRAIN_LOG_LEVEL's level when set),
// made on first use. A program that uses ringtrain as a library keeps its own spdlog settings: ringtrain
// neither replaces spdlog's default logger nor sets the pattern or level of the program's loggers, and its
// warnings reach stderr in its own format without any call.
spdlog::logger& logger();
// For ringtrain's executables: makes logger() spdlog's default logger as well.
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
// Shorthands, as spdlog's own (a format and its arguments, or one message), through log::logger().
#define RINGTRAIN_LOG_SHORTHAND(level)                                           \
  template <typename... Args>                                                   \
  void level(spdlog::format_string_t<Args...> format, Args&&... args) {         \
    log::logger().level(format, std::forward<Args>(args)...);                  \
  }                                                                             \
  template <typename T>                                                         \
  void level(const T& message) {                                                \
    log::logger().level(message);                                               \
  }
RINGTRAIN_LOG_SHORTHAND(trace)
RINGTRAIN_LOG_SHORTHAND(debug)
RINGTRAIN_LOG_SHORTHAND(info)
RINGTRAIN_LOG_SHORTHAND(warn)
RINGTRAIN_LOG_SHORTHAND(error)
#undef RINGTRAIN_LOG_SHORTHAND
}  // namespace ringtrain
