// The log level's sources: RINGTRAIN_LOG_LEVEL wins over the config's default, a level the job names wins
// over it.
#include "ringtrain/core/logging.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace ringtrain {
namespace {

TEST(Logging, TheEnvironmentWinsOverTheDefaultLevelNotOverANamedOne) {
  log::init();
  ::setenv("RINGTRAIN_LOG_LEVEL", "warn", 1);
  log::setConfiguredLevel("info", "info");  // the job left log.level alone
  EXPECT_EQ(log::logger().level(), spdlog::level::warn);
  log::setConfiguredLevel("debug", "info");  // the job asked for debug
  EXPECT_EQ(log::logger().level(), spdlog::level::debug);
  ::unsetenv("RINGTRAIN_LOG_LEVEL");
  log::setConfiguredLevel("info", "info");
  EXPECT_EQ(log::logger().level(), spdlog::level::info);
}

}  // namespace
}  // namespace ringtrain
