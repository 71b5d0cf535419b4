// The `ringtrain` executable: trainer and tools as subcommands. Errors end here: one clear line on stderr
// and an exit code from ringtrain/core/error.h (2 = bad input), never a stack of noise.
#include <csignal>
#include <exception>
#include <new>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "app/commands.h"
#include "ringtrain/build_config.h"
#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/core/logging.h"
#include "train/torch_failure.h"

int main(int argc, char** argv) {
  using namespace ringtrain;
  keepFreedMemoryInProcess();  // before any thread starts: see ringtrain/core/allocator.h
  // A write past a file-size limit (ulimit -f) then fails with EFBIG and is reported with the file it was
  // for, its temporary removed; SIGXFSZ's default would end the process without a word.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"ringtrain: distributed data-parallel training for LibTorch"};
  app.set_version_flag("--version", std::string("ringtrain ") + RINGTRAIN_VERSION);
  app.require_subcommand(1);
  app::CommandBody body;
  app::addConfigCommand(app, body);
  app::addServeCommand(app, body);
  app::addTrainCommand(app, body);
  app::addEvalCommand(app, body);
  app::addBenchAllreduceCommand(app, body);
  app::addGenDataCommand(app, body);
  app::addExportCommand(app, body);
  app::addNeighborsCommand(app, body);
  try {
    log::init();
    // CLI11 would answer an unknown first word with "A subcommand is required", as if none were given.
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known += (known.empty() ? "" : ", ") + sub->get_name();
      found = found || (argc > 1 && sub->check_name(argv[1]));
    }
    if (argc > 1 && argv[1][0] != '-' && !found) {
      std::cerr << "ringtrain: error: unknown command '" << argv[1] << "'; the commands are " << known
                << " (see ringtrain --help)\n";
      return kExitBadInput;
    }
    app.parse(argc, argv);
    return body ? body() : kExitOk;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "ringtrain: error: " << e.what() << " (see ringtrain --help)\n";
    recordFailure(kExitBadInput, e.what());
    return kExitBadInput;
  } catch (const Error& e) {
    // Each failure is also told to ringrun (failure_report.h), unless the trainer already did.
    std::cerr << "ringtrain: error: " << e.what() << "\n";
    recordFailure(e);
    return e.exitCode();
  } catch (const c10::Error& e) {
    // LibTorch's messages carry a C++ backtrace; the first line is what a person needs.
    const std::string message = train::describeTorchFailure(e);
    std::cerr << "ringtrain: " << message << "\n";
    recordFailure(kExitFailure, message);
    return kExitFailure;
  } catch (const std::bad_alloc&) {
    const std::string message = train::describeBadAlloc();
    std::cerr << "ringtrain: " << message << "\n";
    recordFailure(kExitFailure, message);
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "ringtrain: internal error: " << e.what() << "\n";
    recordFailure(e);  // as "internal error: ...", exit code 1
    return kExitFailure;
  }
}
