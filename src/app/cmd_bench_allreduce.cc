// `ringtrain bench allreduce [ARGS]`: the allreduce benchmark (bench/allreduce_bench.cc). This front end
// only replaces itself (exec) with the LibTorch-free allreduce_bench installed beside it, so the measured
// processes never carry LibTorch; run it once per rank under ringrun or mpirun. ARGS go through unchanged
// (see `ringtrain bench allreduce --help`).
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "app/commands.h"
#include "ringtrain/core/error.h"

namespace ringtrain::app {

namespace {

std::string siblingProgram(const std::string& name) {
  std::vector<char> path(PATH_MAX + 1);
  const ssize_t n = readlink("/proc/self/exe", path.data(), PATH_MAX);
  RT_CHECK_T(Error, n > 0, "cannot read /proc/self/exe");
  std::string self(path.data(), static_cast<size_t>(n));
  return self.substr(0, self.rfind('/') + 1) + name;
}

CLI::App* benchCommand(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App* a) { return a->get_name() == "bench"; })) return sub;
  auto* bench = app.add_subcommand("bench", "benchmarks that print our figure beside a peer's");
  bench->require_subcommand(1);
  return bench;
}

}  // namespace

void addBenchAllreduceCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = benchCommand(app)->add_subcommand(
      "allreduce", "ring vs native allreduce, nccl-tests style (one per rank under ringrun/mpirun)");
  cmd->prefix_command();  // every argument after `allreduce` belongs to allreduce_bench
  cmd->set_help_flag();
  cmd->callback([&body, cmd] {
    std::vector<std::string> args = cmd->remaining();
    body = [args] {
      const std::string program = siblingProgram("allreduce_bench");
      // Its usage line and errors then name the command the user typed, not the program behind it.
      static const char kCalledAs[] = "ringtrain bench allreduce";
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(kCalledAs));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      RT_THROW(Error, "cannot run ", program, ": ", std::strerror(errno));
      return kExitFailure;
    };
  });
}

}  // namespace ringtrain::app
