// ringrun: see launch/agent.h for how a job runs and launch/launch_options.cc for the options.
#include <cstdio>
#include <exception>

#include "agent.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/process_info.h"

int main(int argc, char** argv) {
  using namespace ringtrain;
  try {
    log::init();
    auto options = launch::parseLaunchOptions(argc, argv, dist::processEnvironment());
    if (!options) return kExitOk;
    return launch::runAgent(*options);
  } catch (const Error& e) {
    std::fprintf(stderr, "ringrun: error: %s\n", e.what());
    return e.exitCode();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringrun: error: %s\n", e.what());
    return kExitFailure;
  }
}
