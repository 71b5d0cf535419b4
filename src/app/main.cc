// The `ringtrain` executable: trainer and tools as subcommands. Errors end here: one clear line on stderr
// and an exit code from ringtrain/core/error.h (2 = bad input), never a stack of noise.
#include <algorithm>
#include <csignal>
#include <exception>
#include <new>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "app/commands.h"
#include "ringtrain/build_config.h"
#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/core/logging.h"
#include "train/torch_failure.h"

namespace {

// CLI11 answers an unknown command word, and a missing one, with "A subcommand is required": the word, and
// the commands there are, are said instead, at every level (`ringtrain foo`, `ringtrain bench foo`,
// `ringtrain bench`). Empty when the words before the first option are all commands, or reach one that
// takes no command.
std::string commandProblem(const CLI::App& app, int argc, char** argv) {
  const CLI::App* at = &app;
  std::string path = "ringtrain";
  for (int i = 1;; ++i) {
    // Option groups are nameless subcommands to CLI11: not commands.
    const std::vector<const CLI::App*> subs =
        at->get_subcommands([](const CLI::App* sub) { return !sub->get_name().empty(); });
    if (subs.empty()) return "";
    std::string known;
    for (const CLI::App* sub : subs) known += (known.empty() ? "" : ", ") + sub->get_name();
    if (i == argc) return path + " needs a command: " + known + " (see " + path + " --help)";
    if (argv[i][0] == '-') return "";
    const auto next = std::find_if(subs.begin(), subs.end(), [&](const CLI::App* sub) { return sub->check_name(argv[i]); });
    if (next == subs.end()) {
      return "unknown command '" + std::string(argv[i]) + "'; the commands" +
             (at == &app ? std::string() : " of " + path) + " are " + known + " (see " + path + " --help)";
    }
    path += " " + (*next)->get_name();
    at = *next;
  }
}

}  // namespace

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
    if (const std::string problem = commandProblem(app, argc, argv); !problem.empty()) {
      std::cerr << "ringtrain: error: " << problem << "\n";
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
