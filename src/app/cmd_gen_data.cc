// `ringtrain gen-data [JOB.yaml] [--set ...] [--out DIR] [--items N] ...`: writes the synthetic corpus
// (sequences.txt + items.tsv with planted categories) described by the job's `synthetic` section; the
// flags override that section (and run.seed).
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "app/commands.h"
#include "ringtrain/data/synthetic.h"

namespace ringtrain::app {

namespace {
struct GenDataArgs {
  ConfigArgs config;
  std::string out = "data/synthetic";
  // As text: the config parses and range-checks them as it does any value (CLI11 took a seed beyond
  // int64 by wrapping it).
  std::optional<std::string> items, sessions, seed, categories, session_length, alpha, zipf;
  bool no_items = false;
};
}  // namespace

void addGenDataCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("gen-data", "write a synthetic corpus: sequences.txt + items.tsv (planted categories)");
  auto args = std::make_shared<GenDataArgs>();
  addConfigArgs(cmd, args->config, /*config_required=*/false);
  cmd->add_option("--out", args->out, "output directory")->capture_default_str();
  cmd->add_option("--items", args->items, "number of items (synthetic.items)");
  cmd->add_option("--categories", args->categories, "planted categories (synthetic.categories)");
  cmd->add_option("--sessions", args->sessions, "number of sessions (synthetic.sessions)");
  cmd->add_option("--session-length", args->session_length, "mean session length (synthetic.session_length)");
  cmd->add_option("--alpha", args->alpha,
                  "chance that the next item is drawn from the home category, else from a random one, the home one "
                  "included (synthetic.alpha)");
  cmd->add_option("--zipf", args->zipf, "Zipf exponent of popularity within a category (synthetic.zipf)");
  cmd->add_option("--seed", args->seed, "random seed (run.seed)");
  cmd->add_flag("--no-items", args->no_items, "do not write items.tsv");
  cmd->callback([&body, args] {
    body = [args] {
      ConfigArgs c = args->config;
      // A bad value names the option that gave it ("--items: synthetic.items: must be ..."), not --set.
      auto set = [&c](const char* option, const char* key, const std::string& v) {
        c.options.push_back(config::Override{key, v, option});
      };
      if (args->items) set("--items", "synthetic.items", *args->items);
      if (args->categories) set("--categories", "synthetic.categories", *args->categories);
      if (args->sessions) set("--sessions", "synthetic.sessions", *args->sessions);
      if (args->session_length) set("--session-length", "synthetic.session_length", *args->session_length);
      if (args->alpha) set("--alpha", "synthetic.alpha", *args->alpha);
      if (args->zipf) set("--zipf", "synthetic.zipf", *args->zipf);
      if (args->seed) set("--seed", "run.seed", *args->seed);
      const config::JobConfig job = resolveConfig(c);  // validates ranges like any --set
      const auto t0 = std::chrono::steady_clock::now();
      const data::SyntheticResult r = data::generateSynthetic(job.synthetic, job.run.seed, args->out, !args->no_items);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << fmt::format("wrote {} ({} sessions, {} tokens){} in {:.2f} s\n", r.sequences_path, r.sessions,
                               r.tokens, args->no_items ? "" : " and " + r.items_path, s);
      return 0;
    };
  });
}

}  // namespace ringtrain::app
