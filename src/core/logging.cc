#include "ringtrain/core/logging.h"

#include <cstdlib>
#include <memory>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "ringtrain/core/error.h"

namespace ringtrain::log {
namespace {

std::once_flag g_init_once;
std::mutex g_prefix_mu;
std::string g_prefix;  // guarded by g_prefix_mu

std::string patternWith(const std::string& prefix) { return "%H:%M:%S.%e %^%L%$ " + prefix + "%v"; }

void applyPattern(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(g_prefix_mu);
  g_prefix = prefix;
  logger().set_pattern(patternWith(prefix));
}

}  // namespace

namespace {
// Not in spdlog's registry (until init() makes it the default): spdlog::set_level and set_pattern, a
// program's own, leave it alone, as setLevel leaves the program's loggers alone.
// Never destroyed: a thread still running at exit (a loader worker left behind, a detached helper) may log
// after static destructors ran.
const std::shared_ptr<spdlog::logger>& ownLogger() {
  static const auto* const ours = new std::shared_ptr<spdlog::logger>([] {
    auto made = std::make_shared<spdlog::logger>("ringtrain", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    made->set_pattern(patternWith(""));
    const char* env = std::getenv("RINGTRAIN_LOG_LEVEL");
    if (env != nullptr && isValidLevel(env)) made->set_level(spdlog::level::from_str(env));
    return made;
  }());
  return *ours;
}
}  // namespace

spdlog::logger& logger() { return *ownLogger(); }

bool isValidLevel(const std::string& level) {
  return level == "trace" || level == "debug" || level == "info" || level == "warn" || level == "error" ||
         level == "off";
}

void setLevel(const std::string& level) {
  if (!isValidLevel(level)) {
    RT_THROW(ConfigError, "unknown log level '", level, "' (use trace, debug, info, warn, error or off)");
  }
  logger().set_level(spdlog::level::from_str(level));
}

void setConfiguredLevel(const std::string& level, const std::string& default_level) {
  const char* env = std::getenv("RINGTRAIN_LOG_LEVEL");
  setLevel(level == default_level && env != nullptr && *env != '\0' ? std::string(env) : level);
}

void init() {
  std::call_once(g_init_once, [] {
    spdlog::set_default_logger(ownLogger());
    // A level that is none is said (ConfigError), as the executables always did.
    if (const char* env = std::getenv("RINGTRAIN_LOG_LEVEL"); env && *env) setLevel(env);
  });
}

void useSink(spdlog::sink_ptr sink) {
  logger().sinks() = {std::move(sink)};
  std::string prefix;
  {
    std::lock_guard<std::mutex> lock(g_prefix_mu);
    prefix = g_prefix;
  }
  applyPattern(prefix);
}

void setRank(int rank, int world_size) {
  applyPattern(rank < 0 ? std::string() : "[rank " + std::to_string(rank) + "/" + std::to_string(world_size) + "] ");
}

}  // namespace ringtrain::log
