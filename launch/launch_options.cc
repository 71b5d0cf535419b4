#include "launch_options.h"

#include <dirent.h>
#include <netdb.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <algorithm>
#include <charconv>
#include <iostream>
#include <regex>

#include "core/cpu_list.h"
#include "ringtrain/core/error.h"

namespace ringtrain::launch {
namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find(sep, start);
    const std::string part = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!part.empty()) out.push_back(part);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

// The GPUs this node may use: CUDA_VISIBLE_DEVICES when set, else every /dev/nvidiaN.
std::vector<std::string> visibleGpus(const std::map<std::string, std::string>& env) {
  if (auto it = env.find("CUDA_VISIBLE_DEVICES"); it != env.end()) return split(it->second, ',');
  std::vector<int> ids;
  if (DIR* dir = ::opendir("/dev")) {
    static const std::regex kNvidia("nvidia([0-9]+)");
    while (dirent* e = ::readdir(dir)) {
      std::cmatch m;
      if (std::regex_match(e->d_name, m, kNvidia)) ids.push_back(std::stoi(m[1].str()));
    }
    ::closedir(dir);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> out;
  for (int id : ids) out.push_back(std::to_string(id));
  return out;
}

int usableCores() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
}

// Plain decimal, as written: CLI11 would read 010 as octal 8 and 0x10 as 16, silently.
int parseCount(const std::string& text, const char* what) {
  int value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) RT_THROW(ConfigError, what, " ", text, " is out of range");
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    RT_THROW(ConfigError, what, " '", text, "' is not a number");
  }
  return value;
}

// Seconds in decimal or exponent notation (no hex); the range is checked by the caller.
double parseSeconds(const std::string& text, const char* what) {
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::general);
  if (ec == std::errc::result_out_of_range) RT_THROW(ConfigError, what, " ", text, " is out of range");
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    RT_THROW(ConfigError, what, " '", text, "' is not a number of seconds");
  }
  return value;
}

// A file exec can run: a directory has the X bit too (search), and exec refuses it with EACCES in every rank.
bool runnable(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// command[0] as exec would find it; empty when it cannot be run.
std::string resolveProgram(const std::string& name, const std::map<std::string, std::string>& env) {
  if (name.find('/') != std::string::npos) return runnable(name) ? name : std::string();
  auto it = env.find("PATH");
  for (const std::string& dir : split(it == env.end() ? "/usr/local/bin:/usr/bin:/bin" : it->second, ':')) {
    const std::string path = dir + "/" + name;
    if (runnable(path)) return path;
  }
  return std::string();
}

// A host name no resolver knows is a typo, not a network hiccup: said at once, as bad input. Other failures
// (a resolver not answering yet) are left to the connection, which retries until --rdzv-timeout.
void checkResolvable(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (found != nullptr) ::freeaddrinfo(found);
  if (rc == EAI_NONAME) RT_THROW(ConfigError, "--master-addr '", host, "': ", ::gai_strerror(rc));
}

}  // namespace

std::optional<LaunchOptions> parseLaunchOptions(int argc, char** argv, const std::map<std::string, std::string>& env) {
  LaunchOptions o;
  std::string nproc = "1";
  std::string nnodes = "1";
  // Numbers are taken as text and parsed here (see parseCount).
  std::string node_rank = "0", master_port = std::to_string(kDefaultMasterPort), max_restarts = "0";
  std::string grace_period = fmt::format("{:g}", kDefaultGracePeriodS);
  std::string rdzv_timeout = fmt::format("{:g}", kDefaultRendezvousTimeoutS);
  std::string node_timeout = fmt::format("{:g}", kDefaultNodeTimeoutS);
  std::string tee, redirects;
  std::string bind_to = "none", cpus;
  CLI::App app{
      "ringrun: start one process per GPU or core, on one or several nodes, and stop them all when one fails.\n"
      "Usage: ringrun [OPTIONS] -- PROGRAM [ARGS...]",
      "ringrun"};
  app.prefix_command();  // everything from PROGRAM on belongs to the program
  app.add_option("--nproc-per-node,--nproc_per_node", nproc,
                 "processes on this node: a number, 'gpu' (one per visible GPU), 'cpu' (one per core) or 'auto'")
      ->default_str("1");
  app.add_option("--nnodes", nnodes, "number of nodes (each runs its own ringrun)")->default_str("1");
  app.add_option("--node-rank,--node_rank", node_rank, "this node's rank, 0..nnodes-1")->default_str("0");
  CLI::Option* addr_option =
      app.add_option("--master-addr,--master_addr", o.master_addr,
                     "address of node 0, where its ringrun hosts the job's store (it binds only there)")
          ->default_str("127.0.0.1");
  CLI::Option* port_option = app.add_option("--master-port,--master_port", master_port, "port of the job's store on node 0")
      ->default_str(std::to_string(kDefaultMasterPort));
  app.add_flag("--standalone", o.standalone, "a single node: store on 127.0.0.1 at a free port ringrun picks");
  app.add_option("--max-restarts,--max_restarts", max_restarts,
                 "relaunch every rank up to this many times after a failure (RINGTRAIN_RESTART_COUNT)")
      ->default_str("0");
  auto* log_dir = app.add_option("--log-dir,--log_dir", o.log_dir,
                 "also write each rank's output to DIR/<start time>/attempt<A>/rank<R>/{stdout,stderr}.log "
                 "(DIR/latest points at the newest)");
  app.add_option("--tee", tee, "accepted for torchrun compatibility: output always reaches the terminal")
      ->expected(0, 1);
  app.add_option("--redirects", redirects, "accepted for torchrun compatibility (see --tee)")->expected(0, 1);
  app.add_option("--grace-period,--grace_period", grace_period,
                 "seconds between SIGTERM and SIGKILL when stopping the ranks")
      ->default_str(grace_period);
  app.add_option("--rdzv-timeout,--rdzv_timeout", rdzv_timeout, "seconds to wait for the other nodes")
      ->default_str(rdzv_timeout);
  app.add_option("--node-timeout,--node_timeout", node_timeout,
                 "seconds without a heartbeat after which another node counts as failed")
      ->default_str(node_timeout);
  CLI::Option* bind_option = app.add_option("--bind-to,--bind_to", bind_to,
                 "none (default): ranks run on any CPU; cores: each local rank gets its own contiguous share of "
                 "the CPUs ringrun may use (RINGTRAIN_CPUS names it), ranks sharing CPUs only when there are "
                 "more ranks than CPUs")
      ->default_str("none");
  CLI::Option* cpus_option = app.add_option(
      "--cpus", cpus,
      "with --bind-to cores (which it implies): the CPUs to share out, in this order, e.g. 0,8,1,9 to give each "
      "of 2 ranks two CPUs that build/bin/cpu_pairs found to be one core's two threads (default: every CPU "
      "ringrun may use, in id order); with --nproc-per-node cpu, one rank per CPU named");
  app.add_option("--job-token,--job_token", o.job_token,
                 "the job's secret for the store; several nodes need the same one (or RINGTRAIN_JOB_TOKEN)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    std::cout << app.help();
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    RT_THROW(ConfigError, e.what());
  }

  // Given empty (an unset variable in a script), it would silently write no logs.
  if (log_dir->count() > 0 && o.log_dir.empty()) RT_THROW(ConfigError, "--log-dir: empty; give a directory");
  // torchrun's values are 0-3, or LOCAL_RANK:N pairs; anything else is most likely the program, taken as
  // the option's value because it came without -- before it.
  for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"--tee", &tee}, {"--redirects", &redirects}}) {
    if (!value->empty() && value->find_first_not_of("0123456789:,") != std::string::npos) {
      RT_THROW(ConfigError, name, " '", *value, "': torchrun's values are 0-3 or LOCAL_RANK:N,... (ignored here); put "
               "-- before the program");
    }
  }
  o.command = app.remaining();
  if (!o.command.empty() && o.command.front() == "--") o.command.erase(o.command.begin());
  if (o.command.empty()) RT_THROW(ConfigError, "missing program: usage is ringrun [OPTIONS] -- PROGRAM [ARGS...]");
  if (!o.command.front().empty() && o.command.front()[0] == '-') {
    RT_THROW(ConfigError, "unknown option '", o.command.front(), "' (put the program after --)");
  }
  o.program_path = resolveProgram(o.command.front(), env);
  if (o.program_path.empty()) {
    RT_THROW(ConfigError, "program '", o.command.front(), "' not found or not executable");
  }

  if (nnodes.find(':') != std::string::npos) {
    RT_THROW(ConfigError, "--nnodes ", nnodes, ": elastic node ranges are not supported; give one number");
  }
  o.nnodes = parseCount(nnodes, "--nnodes");
  o.node_rank = parseCount(node_rank, "--node-rank");
  o.master_port = parseCount(master_port, "--master-port");
  o.max_restarts = parseCount(max_restarts, "--max-restarts");
  o.grace_period_s = parseSeconds(grace_period, "--grace-period");
  o.rendezvous_timeout_s = parseSeconds(rdzv_timeout, "--rdzv-timeout");
  o.node_timeout_s = parseSeconds(node_timeout, "--node-timeout");
  if (o.nnodes < 1) RT_THROW(ConfigError, "--nnodes must be at least 1, not ", o.nnodes);
  if (o.node_rank < 0 || o.node_rank >= o.nnodes) {
    RT_THROW(ConfigError, "--node-rank ", o.node_rank, " is not in 0..", o.nnodes - 1);
  }

  if (nproc == "gpu" || nproc == "auto") {
    o.gpu_ids = visibleGpus(env);
    if (o.gpu_ids.empty() && nproc == "gpu") RT_THROW(ConfigError, "--nproc-per-node gpu: no GPU is visible");
    o.nproc_per_node = o.gpu_ids.empty() ? usableCores() : static_cast<int>(o.gpu_ids.size());
  } else if (nproc == "cpu") {
    o.nproc_per_node = usableCores();
  } else {
    o.nproc_per_node = parseCount(nproc, "--nproc-per-node");
    if (o.nproc_per_node < 1) {
      RT_THROW(ConfigError, "--nproc-per-node must be at least 1 (or gpu, cpu, auto), not ", o.nproc_per_node);
    }
  }
  if (o.nproc_per_node > 4096) RT_THROW(ConfigError, "--nproc-per-node ", o.nproc_per_node, " is too many (4096 at most)");

  if (o.master_port < 0 || o.master_port > 65535 || (o.master_port == 0 && !o.standalone)) {
    RT_THROW(ConfigError, "--master-port ", o.master_port, " is out of range (1-65535)");
  }
  if (o.standalone) {
    if (o.nnodes != 1) RT_THROW(ConfigError, "--standalone runs a single node; it cannot go with --nnodes ", o.nnodes);
    if (port_option->count() > 0) {
      RT_THROW(ConfigError, "--standalone picks a free port itself; it cannot go with --master-port ", o.master_port);
    }
    // Said, not ignored: ranks told to meet at 127.0.0.1 while the user named another address.
    if (addr_option->count() > 0 && o.master_addr != "127.0.0.1" && o.master_addr != "localhost") {
      RT_THROW(ConfigError, "--standalone hosts the job's store on 127.0.0.1; it cannot go with --master-addr ",
               o.master_addr);
    }
    o.master_addr = "127.0.0.1";
    o.master_port = 0;
  } else {
    checkResolvable(o.master_addr);
  }
  if (bind_to == "cores" || bind_to == "core") {
    o.bind_cores = true;
  } else if (bind_to != "none") {
    RT_THROW(ConfigError, "--bind-to '", bind_to, "': use none or cores");
  }
  if (cpus_option->count() > 0) {
    if (bind_to == "none" && bind_option->count() > 0) {
      RT_THROW(ConfigError, "--cpus ", cpus, " shares CPUs out among the ranks; it cannot go with --bind-to none");
    }
    const std::optional<std::vector<int>> list = parseCpuList(cpus);
    if (!list || list->empty()) {
      RT_THROW(ConfigError, "--cpus '", cpus, "': expected CPU ids and ranges such as 0,8,1-3");
    }
    std::vector<int> sorted = *list;
    std::sort(sorted.begin(), sorted.end());
    const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
    if (twice != sorted.end()) RT_THROW(ConfigError, "--cpus ", cpus, ": CPU ", *twice, " is named twice");
    o.cpus = *list;
    o.bind_cores = true;
    if (nproc == "cpu") o.nproc_per_node = static_cast<int>(o.cpus.size());  // one per CPU it may use
  }
  if (o.max_restarts < 0) RT_THROW(ConfigError, "--max-restarts must be at least 0, not ", o.max_restarts);
  // Waits become nanosecond deadlines: beyond ~9e9 s (or inf) they overflow, and a "grace period" of
  // 1e10 s killed the ranks at once. A year is more than any job asks for.
  constexpr double kLongestWait = 365.0 * 24 * 3600;
  const auto checkWait = [&](const char* option, double seconds, bool zero_ok) {
    if (!(seconds >= 0) || (!zero_ok && seconds == 0) || !(seconds <= kLongestWait)) {
      RT_THROW(ConfigError, fmt::format("{} {}: expected seconds in {}0, {}] (a year)", option, seconds,
                                        zero_ok ? "[" : "(", kLongestWait));
    }
  };
  checkWait("--grace-period", o.grace_period_s, true);
  checkWait("--rdzv-timeout", o.rendezvous_timeout_s, false);
  checkWait("--node-timeout", o.node_timeout_s, false);
  // Nodes beat about once a second, and a beat may come late under load: less than this would count
  // healthy nodes as lost.
  constexpr double kShortestNodeTimeout = 2.0;
  if (o.node_timeout_s < kShortestNodeTimeout) {
    RT_THROW(ConfigError, fmt::format("--node-timeout {}: at least {:g} s (nodes beat about once a second)",
                                      o.node_timeout_s, kShortestNodeTimeout));
  }

  if (o.job_token.empty()) {
    if (auto it = env.find("RINGTRAIN_JOB_TOKEN"); it != env.end()) o.job_token = it->second;
  }
  if (o.job_token.empty() && o.nnodes > 1) {
    RT_THROW(ConfigError, "a job on ", o.nnodes,
             " nodes needs the same secret on every node: export RINGTRAIN_JOB_TOKEN=$(openssl rand -hex 16) "
             "(or pass --job-token) to every ringrun");
  }
  return o;
}

}  // namespace ringtrain::launch
