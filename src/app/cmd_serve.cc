// `ringtrain serve --model PATH [--items PATH] [--port P] [JOB.yaml] [--set serve.key=value]`: the
// recommendation server (ringtrain/serve/server.h). Runs until SIGINT or SIGTERM, then stops cleanly
// (requests in flight finish) and exits 0; a second signal while it stops exits at once, with 128 + the signal.
#include <signal.h>

#include <pthread.h>

#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "app/commands.h"
#include "core/exit_on_signal.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/serve/server.h"
#include "serve/http_server.h"

namespace ringtrain::app {
namespace {

struct ServeArgs {
  ConfigArgs config;
  std::string model;
  std::string items;
  std::optional<std::string> port;  // as text: serve.port parses and range-checks it, naming --port
  std::string host;
  bool host_given = false;  // --host "" is refused, not taken for "not given"
};

int runServe(const ServeArgs& args) {
  ConfigArgs with_port = args.config;
  if (args.port) with_port.options.push_back(config::Override{"serve.port", *args.port, "--port"});
  config::JobConfig job = resolveConfig(with_port);
  log::setConfiguredLevel(job.log.level, config::JobConfig{}.log.level);
  config::ServeOptions options = job.serve;
  if (args.host_given && args.host.empty()) {
    RT_THROW(ConfigError, "--host: empty; give an address to listen on (127.0.0.1 for this machine only, 0.0.0.0 "
             "for every interface)");
  }
  if (args.host_given) options.host = args.host;
  if (args.model.empty() && options.watch_dir.empty()) {
    RT_THROW(ConfigError, "serve: give --model PATH (or serve.watch_dir holding an export)");
  }
  // Signals are taken synchronously by this thread only: block them before any thread starts, so every
  // thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // A port in use, or a host that is not this machine's, is said before the model loads (seconds for a large
  // catalog), not after. Port 0 binds a free port for the check: the host's address is checked all the same.
  serve::HttpServer::checkCanListen(options.host, options.port);
  // Loading the first model can take long (a large catalog) or block (a FIFO): a signal meanwhile stops the
  // process at once, since nothing is serving yet. The main loop below takes over once it is loaded.
  std::unique_ptr<serve::Server> loaded;
  {
    const ExitOnSignal while_loading(
        signals, [](int sig) { return fmt::format("serve: signal {} while loading the model; stopped", sig); },
        kExitOk);
    loaded = std::make_unique<serve::Server>(options, args.model, args.items);
  }
  serve::Server& server = *loaded;
  server.start();
  // Tools and tests read the port from this line (port 0 picks a free one).
  std::printf("listening on %s\n", server.url().c_str());
  std::fflush(stdout);
  const timespec tick{0, 200 * 1000 * 1000};
  while (true) {
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      info("serve: signal {}, shutting down (a second signal exits at once)", sig);
      break;
    }
    if (!server.running()) {
      server.stop();
      RT_THROW(Error, "serve: the HTTP listener stopped unexpectedly");
    }
  }
  {
    // Stopping waits for the requests in flight and for a reload running, which for a large catalog (an
    // index to build) or on a hung file system takes long: Ctrl-C again must not wait behind it.
    const ExitOnSignal while_stopping(
        signals,
        [](int sig) {
          return fmt::format("serve: signal {} while stopping; exited without waiting for the requests and "
                             "reload in flight", sig);
        },
        ExitOnSignal::kSignalExitCode);
    server.stop();
  }
  return kExitOk;
}

}  // namespace

void addServeCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("serve", "serve recommendations from trained embeddings over HTTP");
  auto args = std::make_shared<ServeArgs>();
  addConfigArgs(cmd, args->config, /*config_required=*/false);
  cmd->add_option("--model", args->model, "word2vec text export (N D header, then token v1..vD)");
  cmd->add_option("--items", args->items, "items.tsv with names, for every model loaded, reloads included (default: items.tsv beside each model, or beside the file a linked model leads to)");
  cmd->add_option("--port", args->port, "port (overrides serve.port; 0 picks a free one)");
  auto* host = cmd->add_option("--host", args->host, "bind address (overrides serve.host; default 127.0.0.1)");
  cmd->callback([&body, args, host] {
    args->host_given = host->count() > 0;
    body = [args] { return runServe(*args); };
  });
}

}  // namespace ringtrain::app
