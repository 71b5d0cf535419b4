// `ringtrain train JOB.yaml [--set k=v] [--resume]` and `ringtrain eval JOB.yaml [--checkpoint PATH]`:
// the main job, on every rank of whatever started it (ringrun, mpirun, srun, or nothing for one process).
#include <signal.h>

#include <memory>

#include <fmt/format.h>

#include "app/commands.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/process_info.h"
#include "ringtrain/train/trainer.h"

namespace ringtrain::app {
namespace {

// SIGUSR1 or SIGUSR2 (ringrun passes them on; Slurm's --signal=USR1@SECONDS, SGE's -notify send them before a
// pre-emption): a checkpoint within about a second of training, and training goes on. Without this the
// signal's default action ended the rank.
void checkpointOnSigusr1() {
  struct sigaction action {};
  action.sa_handler = [](int) { train::requestCheckpoint(); };
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGUSR1, &action, nullptr);
  ::sigaction(SIGUSR2, &action, nullptr);
}

struct TrainArgs {
  ConfigArgs config;
  bool resume = false;
  std::string checkpoint;
};

config::JobConfig resolveWithLogLevel(const ConfigArgs& args) {
  config::JobConfig job = resolveConfig(args);
  log::setConfiguredLevel(job.log.level, config::JobConfig{}.log.level);
  return job;
}

void printSummary(const train::TrainSummary& s, const config::JobConfig& job) {
  const int k = job.eval.k;
  const std::string caveat = train::rankingCaveat(s.ranking, s.held_out_lines, s.items, k);
  if (s.ranking.count == 0) {  // a rate over nothing would read as a model that never hits
    fmt::print("HR@{}: not measured ({})\n", k, caveat);
  } else {
    fmt::print("HR@{}: {:.4f}  NDCG@{}: {:.4f}  ({} held-out quer{}; popularity baseline HR@{}: {:.4f})\n", k,
               s.ranking.hitRate(), k, s.ranking.ndcg(), s.ranking.count, s.ranking.count == 1 ? "y" : "ies", k,
               s.popularity.hitRate());
    if (!caveat.empty()) fmt::print("  ({})\n", caveat);
  }
  if (s.categories.neighbor_total > 0) {
    fmt::print("category agreement of {}-NN: {:.3f}  (random pairs: {:.3f})\n", k, s.categories.neighborShare(),
               s.categories.randomShare());
  }
  if (!s.export_path.empty()) fmt::print("vectors: {}\n", s.export_path);
  if (!s.plot_path.empty()) fmt::print("picture: {}\n", s.plot_path);
  if (!s.checkpoint_path.empty()) fmt::print("checkpoint: {}\n", s.checkpoint_path);
  if (!s.metrics_path.empty()) fmt::print("metrics: {}\n", s.metrics_path);
  std::fflush(stdout);
}

}  // namespace

void addTrainCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("train", "train item embeddings from a job file (one process per rank)");
  auto args = std::make_shared<TrainArgs>();
  addConfigArgs(cmd, args->config, /*config_required=*/true);
  cmd->add_flag("--resume", args->resume, "continue from the newest checkpoint (same as checkpoint.resume=true)");
  cmd->callback([&body, args] {
    body = [args] {
      checkpointOnSigusr1();  // first: a scheduler's warning may come while the job is read
      // A reader that goes away (a metrics FIFO's, a pipe's on stdout) makes writes fail with EPIPE, which
      // the run reports naming the file, instead of killing the rank with SIGPIPE, which names nothing.
      ::signal(SIGPIPE, SIG_IGN);
      config::JobConfig job = resolveWithLogLevel(args->config);
      if (args->resume && !job.checkpoint.resume) {
        for (const std::string& text : args->config.sets) {
          if (config::parseOverride(text).key == "checkpoint.resume") {
            RT_THROW(ConfigError, "--resume and --set ", text, " disagree; give one of them");
          }
        }
      }
      if (args->resume) job.checkpoint.resume = true;
      const dist::ProcessInfo process = dist::detectProcessInfo(dist::processEnvironment(), job.comm);
      const train::TrainSummary summary = train::trainJob(job, process);
      if (process.rank == 0) printSummary(summary, job);
      return 0;
    };
  });
}

void addEvalCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("eval", "evaluate a checkpoint on the job's held-out split (HR@k, NDCG@k)");
  auto args = std::make_shared<TrainArgs>();
  addConfigArgs(cmd, args->config, /*config_required=*/true);
  cmd->add_option("--checkpoint", args->checkpoint,
                  "checkpoint file, or a directory (its newest valid checkpoint); default: the job's checkpoint dir");
  cmd->callback([&body, args] {
    body = [args] {
      const config::JobConfig job = resolveWithLogLevel(args->config);
      const dist::ProcessInfo process = dist::detectProcessInfo(dist::processEnvironment(), job.comm);
      const train::TrainSummary summary = train::evaluateJob(job, process, args->checkpoint);
      if (process.rank == 0) printSummary(summary, job);
      return 0;
    };
  });
}

}  // namespace ringtrain::app
