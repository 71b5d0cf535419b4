#include "app/commands.h"

namespace ringtrain::app {

void addConfigArgs(CLI::App* cmd, ConfigArgs& args, bool config_required) {
  auto* opt = cmd->add_option("config", args.path, "job file (YAML); see configs/default.yaml");
  if (config_required) opt->required();
  cmd->add_option("--set", args.sets, "override a key: --set section.key=value (repeatable)")
      ->type_name("KEY=VALUE")
      ->expected(1)  // one pair per --set: help then shows no "..." after it
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);
}

config::JobConfig resolveConfig(const ConfigArgs& args) {
  std::vector<config::Override> overrides;
  for (const std::string& text : args.sets) overrides.push_back(config::parseOverride(text));
  overrides.insert(overrides.end(), args.options.begin(), args.options.end());
  if (args.path.empty()) return config::fromOverrides(overrides);
  return config::loadFile(args.path, overrides);
}

}  // namespace ringtrain::app
