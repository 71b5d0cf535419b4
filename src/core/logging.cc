#include "ringtrain/core/logging.h"

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "ringtrain/core/error.h"

namespace ringtrain::log {
namespace {

std::once_flag g_init_once;
std::mutex g_prefix_mu;
std::string g_prefix;  // guarded by g_prefix_mu

void applyPattern(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(g_prefix_mu);
  g_prefix = prefix;
  spdlog::set_pattern("%H:%M:%S.%e %^%L%$ " + prefix + "%v");
}

}  // namespace

bool isValidLevel(const std::string& level) {
  return level == "trace" || level == "debug" || level == "info" || level == "warn" || level == "error" ||
         level == "off";
}

void setLevel(const std::string& level) {
  if (!isValidLevel(level)) {
    RT_THROW(ConfigError, "unknown log level '", level, "' (use trace, debug, info, warn, error or off)");
  }
  spdlog::set_level(spdlog::level::from_str(level));
}

void setConfiguredLevel(const std::string& level, const std::string& default_level) {
  const char* env = std::getenv("RINGTRAIN_LOG_LEVEL");
  setLevel(level == default_level && env != nullptr && *env != '\0' ? std::string(env) : level);
}

void init() {
  std::call_once(g_init_once, [] {
    spdlog::set_default_logger(spdlog::stderr_color_mt("ringtrain"));
    applyPattern("");
    if (const char* env = std::getenv("RINGTRAIN_LOG_LEVEL"); env && *env) setLevel(env);
  });
}

void useSink(spdlog::sink_ptr sink) {
  init();
  spdlog::default_logger()->sinks() = {std::move(sink)};
  std::string prefix;
  {
    std::lock_guard<std::mutex> lock(g_prefix_mu);
    prefix = g_prefix;
  }
  applyPattern(prefix);
}

void setRank(int rank, int world_size) {
  init();
  applyPattern(rank < 0 ? std::string() : "[rank " + std::to_string(rank) + "/" + std::to_string(world_size) + "] ");
}

}  // namespace ringtrain::log
