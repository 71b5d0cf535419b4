// `ringtrain config [JOB.yaml] [--set k=v]`: prints the resolved configuration as canonical YAML and its
// hash, the same text every rank compares at start.
#include <iostream>
#include <memory>

#include "app/commands.h"

namespace ringtrain::app {

void addConfigCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("config", "print the resolved configuration (canonical YAML) and its hash");
  auto args = std::make_shared<ConfigArgs>();
  addConfigArgs(cmd, *args, /*config_required=*/false);
  cmd->callback([&body, args] {
    body = [args] {
      const config::JobConfig job = resolveConfig(*args);
      std::cout << config::toYaml(job) << "# hash: " << config::hash(job) << "\n";
      return 0;
    };
  });
}

}  // namespace ringtrain::app
