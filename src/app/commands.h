// The subcommands of the `ringtrain` executable. Each lives in its own cmd_<name>.cc and registers itself
// on the CLI11 app through one add*Command function; main.cc calls them all.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ringtrain/config/config.h"

namespace ringtrain::app {

// The job file and --set overrides that most subcommands share.
struct ConfigArgs {
  std::string path;  // empty: defaults only
  std::vector<std::string> sets;
  std::vector<config::Override> options;  // a command's own options for config keys, applied after `sets`
};
void addConfigArgs(CLI::App* cmd, ConfigArgs& args, bool config_required);
config::JobConfig resolveConfig(const ConfigArgs& args);

// A subcommand's body returns the process exit code; exceptions reach main's handler.
using CommandBody = std::function<int()>;

void addConfigCommand(CLI::App& app, CommandBody& body);
void addServeCommand(CLI::App& app, CommandBody& body);
void addTrainCommand(CLI::App& app, CommandBody& body);
void addEvalCommand(CLI::App& app, CommandBody& body);
void addBenchAllreduceCommand(CLI::App& app, CommandBody& body);
void addGenDataCommand(CLI::App& app, CommandBody& body);
void addExportCommand(CLI::App& app, CommandBody& body);
void addNeighborsCommand(CLI::App& app, CommandBody& body);

}  // namespace ringtrain::app
