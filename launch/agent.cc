#include "agent.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "child_process.h"
#include "cpu_binding.h"
#include "run_log_dir.h"
#include "console.h"
#include "output_pump.h"
#include "root_cause.h"
#include "core/process_state.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/tcp_store.h"

extern char** environ;

namespace ringtrain::launch {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kWatchChunk = 1000ms;        // the end watcher re-checks its stop flag this often
constexpr auto kInterruptCheck = 250ms;      // rendezvous waits look at pending signals this often

// How an attempt's end names a node that went silent: "fail <node> lost: no sign of life for <T> s".
constexpr const char* kLostText = "lost: no sign of life for";
// How an attempt's end says its rank's program could not be started, for a reason a restart would not
// mend: "fail <node> rank <R> exited with code 127: cannot run PATH: why [not restartable]", the marker last
// (a rank's own failure message, which may quote anything, comes there only for a rank that ran). Every node
// reads the same end, so all of them give up together (a node that restarted alone would wait at the
// rendezvous for the others).
constexpr const char* kCannotRunText = ": cannot run ";
constexpr const char* kNotRestartableText = " [not restartable]";

// exec errors a retry cannot mend. A transient one (ETXTBSY while the binary is rebuilt, ENOMEM, EMFILE, EIO)
// leaves restarts as they were.
bool lastingExecError(int error) {
  return error == ENOENT || error == EACCES || error == ENOEXEC || error == ENOTDIR || error == ELOOP ||
         error == ENAMETOOLONG || error == EISDIR || error == E2BIG;
}

// A second SIGINT/SIGTERM/SIGHUP came, or one after the job ended: the last flush does not wait long for
// a reader that does not read.
std::atomic<bool> g_flush_briefly{false};

// How long after a rank ended well ringrun names the ranks still running (once).
constexpr std::chrono::seconds kStragglerNotice{20};

// Milliseconds from now until `when` for poll(), rounded up (a poll that waits them returns at `when`, not
// just before it), and 0 once it has passed.
int msUntil(Clock::time_point when) {
  return static_cast<int>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(when - Clock::now()).count() + 1));
}

void say(const std::string& line) { consoleErr().write("ringrun: " + line + "\n"); }

std::string randomToken() {
  uint8_t bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    RT_CHECK(n > 0 || errno == EINTR, "getrandom: ", std::strerror(errno));
    if (n > 0) got += static_cast<size_t>(n);
  }
  static const char kHex[] = "0123456789abcdef";
  std::string token;
  for (uint8_t b : bytes) {
    token += kHex[b >> 4];
    token += kHex[b & 15];
  }
  return token;
}

// Outcomes other than "ok" are "<fail|interrupted> <node> <text>".
int endNode(const std::string& value) {
  char kind[32];
  int node = -1;
  return std::sscanf(value.c_str(), "%31s %d", kind, &node) == 2 ? node : -1;
}

std::string describeEnd(const std::string& value) {
  const int node = endNode(value);
  if (node < 0) return value;
  const size_t text = value.find(' ', value.find(' ') + 1);
  const bool failed = value.rfind("fail", 0) == 0;
  return "node " + std::to_string(node) + (failed ? " failed: " : " was interrupted: ") +
         (text == std::string::npos ? "" : value.substr(text + 1));
}

struct Interrupted {
  int signal;
};

// SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 arrive through a signalfd that the main
// loop polls. They are blocked before any thread exists, so every thread inherits the mask and only the
// signalfd sees them. SIGQUIT stops the job as SIGTERM does; SIGUSR1/SIGUSR2 (a scheduler's warning before
// pre-emption, Slurm's --signal) are passed to the ranks, and the job goes on.
bool isNotice(int sig) { return sig == SIGUSR1 || sig == SIGUSR2; }

class SignalInbox {
 public:
  SignalInbox() {
    sigemptyset(&set_);
    for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&set_, sig);
    // Started under nohup (SIGHUP ignored): a hangup is not for this job. It stays ignored, and the ranks
    // inherit that (child_process.cc), as nohup's users expect.
    if (hangupIgnored()) sigdelset(&set_, SIGHUP);
    RT_CHECK(::pthread_sigmask(SIG_BLOCK, &set_, nullptr) == 0, "sigprocmask failed");
    ::signal(SIGPIPE, SIG_IGN);  // a closed terminal must not kill the launcher
    fd_.reset(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
    RT_CHECK(fd_.valid(), "signalfd: ", std::strerror(errno));
  }
  int fd() const { return fd_.get(); }
  std::vector<int> drain() {
    std::vector<int> out;
    signalfd_siginfo info;
    while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      out.push_back(static_cast<int>(info.ssi_signo));
    }
    return out;
  }

 private:
  sigset_t set_;
  UniqueFd fd_;
};

// Waits in a thread for the attempt's outcome key and signals an eventfd when it is there (or when the
// store is lost).
// `tick` runs about once a second while the key is absent (the node heartbeat); a non-empty result ends
// the watch with that value.
class EndWatcher {
 public:
  EndWatcher(dist::Store& store, std::string key, std::function<std::string()> tick)
      : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    RT_CHECK(wake_.valid(), "eventfd: ", std::strerror(errno));
    thread_ = std::thread([this, &store, key = std::move(key), tick = std::move(tick)] {
      std::string value, error;
      for (;;) {
        try {
          value = dist::toString(store.get(key, kWatchChunk));
          break;
        } catch (const TimeoutError&) {
          if (stop_.load()) return;
          try {
            value = tick();
          } catch (const std::exception& e) {
            error = e.what();
            break;
          }
          if (!value.empty()) break;
        } catch (const std::exception& e) {
          error = e.what();
          break;
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        value_ = value;
        error_ = error;
      }
      const uint64_t one = 1;
      (void)!::write(wake_.get(), &one, sizeof one);
    });
  }
  ~EndWatcher() {
    stop_.store(true);
    thread_.join();
  }
  int fd() const { return wake_.get(); }
  // The outcome, or an empty value and the error that cut the watcher off the store.
  std::pair<std::string, std::string> result() {
    std::lock_guard<std::mutex> lock(mu_);
    return {value_, error_};
  }

 private:
  UniqueFd wake_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string value_;  // guarded by mu_
  std::string error_;  // guarded by mu_
  std::thread thread_;
};

// How long this process stood still: a thread that only wakes every 100 ms and keeps the longest gap between
// two wakings beyond that. A process stopped (SIGSTOP, Ctrl-Z, a debugger) or a machine that stalled shows
// as one long gap; a slow store or a busy main loop does not, as nothing else runs on this thread.
class StallClock {
 public:
  StallClock()
      : thread_([this] {
          std::unique_lock<std::mutex> lock(mu_);
          for (auto last = Clock::now(); !stop_; last = Clock::now()) {
            cv_.wait_for(lock, kBeat, [this] { return stop_; });
            const auto stood = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last - kBeat);
            longest_ = std::max(longest_, stood);
          }
        }) {}
  ~StallClock() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  StallClock(const StallClock&) = delete;
  StallClock& operator=(const StallClock&) = delete;

  std::chrono::milliseconds longest() const {
    std::lock_guard<std::mutex> lock(mu_);
    return longest_;
  }

 private:
  static constexpr auto kBeat = std::chrono::milliseconds(100);
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                               // guarded by mu_
  std::chrono::milliseconds longest_{0};           // guarded by mu_
  std::thread thread_;                              // last: starts once the members it reads exist
};

struct Rank {
  int rank = 0;
  int local_rank = 0;
  pid_t pid = -1;
  std::optional<ExitStatus> status;
  bool stopped_by_us = false;  // was still running when the job was being stopped
  int64_t ended_ns = 0;        // when it was reaped (system clock)
  std::string stopped_state;   // "stopped" or "stopped by a debugger" when the job failed while it was
  std::string failure_file;    // where it records its failure (root_cause.h); "" for none
  UniqueFd exec_report;        // Child::exec_report: why its program could not be started (execErrorOf)
  int exec_error = 0;          // read from exec_report when reaped: errno of a failed exec, else 0
  // What it recorded there, once read (recordOf()): a record is written once, whole, and never changes.
  mutable std::optional<FailureRecord> record;
  Tail tail;
  UniqueFd out, err;
  std::unique_ptr<OutputPump> out_pump, err_pump;
};

enum class Outcome { kSuccess, kFailed, kInterrupted };

struct AttemptResult {
  Outcome outcome = Outcome::kSuccess;
  int exit_code = 0;
  int signal = 0;
  // The attempt's end names a rank whose program could not be started (exec failed: not found, not
  // executable), on this node or another: a restart would fail the same way. Said as "rank N: cannot run
  // PATH: why" (with " on node K" for another node's).
  std::string not_started;
};

class Agent {
 public:
  explicit Agent(const LaunchOptions& o) : o_(o) {
    // Orphans of the ranks (what a killed rank had started) become ringrun's children, and are reaped here.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  }

  int run() {
    token_ = o_.job_token.empty() ? randomToken() : o_.job_token;
    master_port_ = o_.master_port;
    if (o_.node_rank == 0) {
      server_ = std::make_unique<dist::TcpStoreServer>(o_.master_addr, o_.master_port, token_,
                                                       "--master-port (or --standalone, which picks a free one)");
      master_port_ = server_->port();
    }
    connect();
    try {
      const int code = runJob();
      leave();
      return code;
    } catch (...) {
      leave();  // node 0 keeps the store up until the others have read why the job ends
      throw;
    }
  }

 private:
  // After the rendezvous, a node that cannot start its ranks tells the others why: waiting for this one to
  // start, they learn of it now, not at --rdzv-timeout.
  void refuseJob(const std::string& why) {
    store_->compareSet(key("refused"), {}, dist::toBytes("node " + std::to_string(o_.node_rank) + ": " + why));
  }

  int runJob() {
    rendezvous();
    if (!failure_records_.available()) {
      say("cannot make a folder for the ranks' failure records under " + failure_records_.base() +
          ": a failed job is blamed on the first rank to end, which may be a consequence of another's failure");
    }
    if (!o_.log_dir.empty()) {
      RunLogDir logs;
      try {
        logs = makeRunLogDir(o_.log_dir, std::time(nullptr), o_.node_rank, o_.nnodes);
      } catch (const ConfigError& e) {
        refuseJob(e.what());
        throw;
      }
      run_log_dir_ = logs.path;
      say("writing the ranks' output to " + run_log_dir_ + "/attempt<A>/rank<R>/{stdout,stderr}.log");
      if (!logs.warning.empty()) say(logs.warning);
    }
    if (o_.bind_cores) {
      // Cut once, before any rank runs: every attempt binds its ranks alike.
      std::vector<int> cpus;
      try {
        cpus = cpusToShare(o_.cpus, allowedCpus());
      } catch (const ConfigError& e) {
        refuseJob(e.what());  // joined already, as for --log-dir above
        throw;
      }
      std::string slices;
      for (int local = 0; local < o_.nproc_per_node; ++local) {
        rank_cpus_.push_back(cpusOfLocalRank(cpus, o_.nproc_per_node, local));
        slices += (local == 0 ? "" : ", ") + std::to_string(local) + " -> " + cpuListText(rank_cpus_.back());
      }
      say("binding local ranks to CPUs: " + slices +
          (o_.nproc_per_node > static_cast<int>(cpus.size()) ? " (more ranks than CPUs: ranks share them)" : ""));
    }
    int code = 0;
    for (int attempt = 0;; ++attempt) {
      const AttemptResult r = runAttempt(attempt);
      if (r.outcome == Outcome::kSuccess) {
        code = 0;
        break;
      }
      if (r.outcome == Outcome::kInterrupted || attempt >= o_.max_restarts) {
        code = r.exit_code;
        if (r.outcome == Outcome::kFailed && o_.max_restarts > 0) {
          say("giving up after " + std::to_string(o_.max_restarts) + " restart(s) (--max-restarts): the last "
              "attempt failed too");
        }
        break;
      }
      if (r.outcome == Outcome::kFailed && !r.not_started.empty()) {
        code = r.exit_code;
        say("not restarting (--max-restarts " + std::to_string(o_.max_restarts) + "): " + r.not_started +
            ", and a restart would fail the same way");
        break;
      }
      say("restarting all ranks (restart " + std::to_string(attempt + 1) + " of " + std::to_string(o_.max_restarts) +
          ")");
    }
    return code;
  }

  // The store is node 0's ringrun: one that does not answer for --node-timeout has failed, like any node.
  std::chrono::milliseconds storeOpTimeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(o_.node_timeout_s * 1000.0));
  }

  std::string key(const std::string& k) const { return "ringrun/" + k; }
  std::string attemptKey(int attempt, const std::string& k) const {
    return key("a" + std::to_string(attempt) + "/" + k);
  }

  void checkSignals() {
    for (int sig : signals_.drain()) {
      if (isNotice(sig)) {
        say("got " + signalName(sig) + " before the ranks started: nobody to pass it to");
        continue;
      }
      if (sig != SIGCHLD) throw Interrupted{sig};
    }
  }

  // Connecting and waiting for other nodes can take minutes: keep Ctrl-C working meanwhile.
  void connect() {
    const auto deadline = Clock::now() + std::chrono::duration<double>(o_.rendezvous_timeout_s);
    for (;;) {
      try {
        store_ = std::make_unique<dist::TcpStoreClient>(o_.master_addr, master_port_, token_, kInterruptCheck,
                                                        storeOpTimeout());
        return;
      } catch (const CommError& e) {
        // A wrong job token is final. A connection refused (node 0's store not up yet) is retried until
        // --rdzv-timeout: nodes may start in any order.
        if (std::strstr(e.what(), "refused this client") != nullptr) {
          RT_THROW(CommError, "node ", o_.node_rank, " cannot join the job: ", e.what());
        }
        if (Clock::now() >= deadline) {
          RT_THROW(CommError, "node ", o_.node_rank, " could not join the job within --rdzv-timeout ",
                   o_.rendezvous_timeout_s, " s; the last try: ", e.what());
        }
      }
      checkSignals();
    }
  }

  // Between slices it also looks, with `watch_refusal`, for a refusal of the job's settings by a node that
  // came later (see rendezvous()): the nodes already waiting learn of it at once.
  void waitKeys(const std::vector<std::string>& keys, const std::string& what, bool watch_refusal) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(o_.rendezvous_timeout_s);
    for (;;) {
      try {
        store_->wait(keys, kInterruptCheck);
        if (server_) refusals_before_ = server_->refusals();
        return;
      } catch (const TimeoutError& e) {
        if (watch_refusal && store_->check({key("refused")})) {
          RT_THROW(ConfigError, dist::toString(store_->get(key("refused"), storeOpTimeout())));
        }
        if (Clock::now() >= deadline) {
          // A node that came with another job's token never joins: its refusal is why (node 0 only).
          const std::string refused = server_ ? server_->refusals() : "";
          RT_THROW(TimeoutError, what, " did not happen within --rdzv-timeout ", o_.rendezvous_timeout_s,
                   " s; the last wait: ", e.what(), refused == refusals_before_ ? "" : "; the job's store " + refused);
        }
      }
      checkSignals();
    }
  }

  // The settings every node must share, as "<node> <nnodes> <nproc-per-node> <max-restarts>".
  std::string settings() const {
    return fmt::format("{} {} {} {}", o_.node_rank, o_.nnodes, o_.nproc_per_node, o_.max_restarts);
  }

  // What differs between this node's settings and `first`'s (another node's settings()), or "".
  std::string settingsMismatch(const std::string& first) const {
    int node = 0, nnodes = 0, nproc = 0, restarts = 0;
    if (std::sscanf(first.c_str(), "%d %d %d %d", &node, &nnodes, &nproc, &restarts) != 4) {
      return "the job's store holds malformed settings '" + first + "' (another program's store on this port?)";
    }
    const auto differ = [&](const char* option, int theirs, int mine) {
      return fmt::format("node {} has {} {} but node {} has {}: it must be the same on every node", node, option,
                         theirs, o_.node_rank, mine);
    };
    if (nnodes != o_.nnodes) return differ("--nnodes", nnodes, o_.nnodes);
    if (nproc != o_.nproc_per_node) return differ("--nproc-per-node", nproc, o_.nproc_per_node);
    if (restarts != o_.max_restarts) return differ("--max-restarts", restarts, o_.max_restarts);
    return "";
  }

  void rendezvous() {
    agent_id_ = randomToken().substr(0, 8);
    const std::string now = dist::toString(
        store_->compareSet(key("node/" + std::to_string(o_.node_rank)), {}, dist::toBytes(agent_id_)));
    if (now != agent_id_) {  // refused alone: the job goes on with the ringrun that has this rank
      RT_THROW(ConfigError, "node rank ", o_.node_rank, " is already taken by another ringrun of this job");
    }
    // Joined from here on, before the settings are read: whoever reads this node's settings also finds it
    // joined, so a node refused below still counts in leave(), and node 0 waits for it to read the refusal.
    store_->set(key("joined/" + std::to_string(o_.node_rank)), dist::toBytes("1"));
    joined_ = true;
    // The first node to come sets the job's settings; a node that differs refuses them for every node at
    // once, rather than all of them meeting (or never meeting: another --nnodes) to wait out --rdzv-timeout.
    const std::string first = dist::toString(store_->compareSet(key("settings"), {}, dist::toBytes(settings())));
    if (const std::string mismatch = settingsMismatch(first); !mismatch.empty()) {
      store_->compareSet(key("refused"), {}, dist::toBytes(mismatch));
      RT_THROW(ConfigError, mismatch);
    }
    std::vector<std::string> keys;
    for (int n = 0; n < o_.nnodes; ++n) keys.push_back(key("node/" + std::to_string(n)));
    waitKeys(keys, "the meeting of all " + std::to_string(o_.nnodes) + " nodes", true);
    world_size_ = o_.nnodes * o_.nproc_per_node;
  }

  std::vector<std::string> childEnv(const Rank& r, int attempt) const {
    std::map<std::string, std::string> set = {
        {"RANK", std::to_string(r.rank)},
        {"LOCAL_RANK", std::to_string(r.local_rank)},
        {"WORLD_SIZE", std::to_string(world_size_)},
        {"LOCAL_WORLD_SIZE", std::to_string(o_.nproc_per_node)},
        {"GROUP_RANK", std::to_string(o_.node_rank)},
        {"MASTER_ADDR", o_.master_addr},
        {"MASTER_PORT", std::to_string(master_port_)},
        {"RINGTRAIN_JOB_TOKEN", token_},
        {"RINGTRAIN_LAUNCHER", "ringrun"},  // the store is ringrun's: no rank hosts one
        {"RINGRUN_PID", std::to_string(::getpid())},  // every local rank's parent (core/process_state.h)
        {"RINGTRAIN_RESTART_COUNT", std::to_string(attempt)},
        {"TORCHELASTIC_RESTART_COUNT", std::to_string(attempt)},
    };
    if (!o_.gpu_ids.empty()) set["CUDA_VISIBLE_DEVICES"] = o_.gpu_ids[static_cast<size_t>(r.local_rank)];
    // A bound rank's CPUs; an unbound rank gets none, not a value ringrun inherited (a nested ringrun).
    if (!rank_cpus_.empty()) set["RINGTRAIN_CPUS"] = cpuListText(rank_cpus_[static_cast<size_t>(r.local_rank)]);
    // Likewise a failure file is this rank's, never one a nested ringrun inherited.
    if (!r.failure_file.empty()) set[kErrorFileEnv] = r.failure_file;
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      const char* eq = std::strchr(*e, '=');
      const std::string name = eq == nullptr ? std::string() : std::string(*e, static_cast<size_t>(eq - *e));
      if (eq == nullptr || (set.count(name) == 0 && name != "RINGTRAIN_CPUS" && name != kErrorFileEnv)) {
        env.emplace_back(*e);
      }
    }
    for (const auto& [k, v] : set) env.push_back(k + "=" + v);
    return env;
  }

  // A rank of this node ended with exit code 0 (the first to): said to the other nodes, so that one whose rank
  // fails later, perhaps waiting for it, can name it. Best effort: the store may be gone.
  void publishFirstDone(int attempt, const Rank& r) {
    try {
      store_->set(attemptKey(attempt, "done/" + std::to_string(o_.node_rank)),
                  dist::toBytes(std::to_string(r.rank) + " " + std::to_string(r.ended_ns)));
    } catch (const CommError&) {
    }
  }

  // The ranks of other nodes that had ended with exit code 0 before `failed` did (publishFirstDone): across
  // nodes as on this one, the failure is often its peers timing out while they waited for such a rank.
  void sayOtherNodesDoneBefore(int attempt, const Rank& failed) {
    if (o_.nnodes == 1) return;
    for (int n = 0; n < o_.nnodes; ++n) {
      if (n == o_.node_rank) continue;
      try {
        const std::string k = attemptKey(attempt, "done/" + std::to_string(n));
        if (!store_->check({k})) continue;
        long long rank = -1, ended_ns = 0;
        if (std::sscanf(dist::toString(store_->get(k, storeOpTimeout())).c_str(), "%lld %lld", &rank, &ended_ns) != 2) continue;
        const int64_t failed_ns = failed.ended_ns > 0 ? failed.ended_ns : systemNowNs();  // still unwinding
        if (ended_ns > failed_ns) continue;
        say(fmt::format("rank {} on node {} had ended with exit code 0, {:.1f} s before rank {} failed: the others may "
                        "have been waiting for it",
                        rank, n, static_cast<double>(failed_ns - ended_ns) / 1e9, failed.rank));
      } catch (const CommError&) {
        return;  // the store is gone: nothing more to learn from it
      }
    }
  }

  // First writer wins; returns the outcome now recorded (ours or an earlier one), "" if the store is gone.
  std::string publishEnd(int attempt, const std::string& outcome) {
    try {
      return dist::toString(store_->compareSet(attemptKey(attempt, "end"), {}, dist::toBytes(outcome)));
    } catch (const CommError& e) {
      say("cannot reach the job's store: " + std::string(e.what()));
      return "";
    }
  }

  // This node's ranks all succeeded: its own key says so, and whoever sees every node's key records the end
  // "ok". Setting a key twice is harmless, so the end watcher's tick repeats this after a store call that
  // failed (a stalled store, a network that heals): a counter bumped once could lose its bump and leave a
  // successful job waiting forever. Returns the end now recorded, or "" while nodes are still running.
  std::string publishSuccess(int attempt) {
    store_->set(attemptKey(attempt, "ok/" + std::to_string(o_.node_rank)), dist::toBytes("1"));
    std::vector<std::string> all;
    for (int n = 0; n < o_.nnodes; ++n) all.push_back(attemptKey(attempt, "ok/" + std::to_string(n)));
    if (!store_->check(all)) return "";
    return dist::toString(store_->compareSet(attemptKey(attempt, "end"), {}, dist::toBytes("ok")));
  }

  // Each node bumps its counter every second and watches the others': a node whose counter stands still
  // for --node-timeout (its ringrun killed, its machine gone) fails the attempt, so no node waits forever
  // for a peer that will never report.
  // Once `succeeded` is set, each tick also repeats publishSuccess() until the end is recorded.
  std::function<std::string()> heartbeat(int attempt, std::shared_ptr<const std::atomic<bool>> succeeded) {
    struct Seen {
      std::string value;
      Clock::time_point since;
    };
    auto seen = std::make_shared<std::map<int, Seen>>();
    return [this, attempt, seen, succeeded]() -> std::string {
      if (succeeded->load()) {
        try {
          const std::string end = publishSuccess(attempt);
          if (!end.empty()) return end;
        } catch (const CommError&) {  // tried again at the next tick; a store that is gone fails the wait
        }
      }
      if (o_.nnodes == 1) return std::string();
      store_->add(attemptKey(attempt, "beat/" + std::to_string(o_.node_rank)), 1);
      const auto now = Clock::now();
      for (int n = 0; n < o_.nnodes; ++n) {
        if (n == o_.node_rank) continue;
        const std::string k = attemptKey(attempt, "beat/" + std::to_string(n));
        const std::string value = store_->check({k}) ? dist::toString(store_->get(k, storeOpTimeout())) : "";
        auto [it, fresh] = seen->try_emplace(n, Seen{value, now});
        if (fresh || it->second.value != value) {
          it->second = Seen{value, now};
        } else if (now - it->second.since > std::chrono::duration<double>(o_.node_timeout_s)) {
          const std::string outcome = "fail " + std::to_string(n) + " " + kLostText + " " +
                                      fmt::format("{:g}", o_.node_timeout_s) + " s";
          return dist::toString(store_->compareSet(attemptKey(attempt, "end"), {}, dist::toBytes(outcome)));
        }
      }
      return std::string();
    };
  }

  // A ringrun that stood still for longer than --node-timeout (stopped, or its machine stalled) was counted
  // lost by the other nodes, whatever it says next of them or of the store: said, where several nodes run.
  bool stoodStillPastTheNodeTimeout() const {
    return o_.nnodes > 1 && std::chrono::duration<double>(stood_still_).count() > o_.node_timeout_s;
  }
  void sayIfThisNodeStoodStill(const StallClock& stall) {
    stood_still_ = stall.longest();
    const double stood_s = std::chrono::duration<double>(stood_still_).count();
    if (!stoodStillPastTheNodeTimeout()) return;
    say(fmt::format("this ringrun stood still for {:.0f} s (stopped by SIGSTOP, Ctrl-Z or a debugger, or its machine "
                    "stalled), more than --node-timeout {:g} s: the other nodes heard no heartbeat from it meanwhile, "
                    "so what is said of them or of the store above may follow from that",
                    stood_s, o_.node_timeout_s));
  }

  // The rank's failure record, read from its file until there is one.
  static const std::optional<FailureRecord>& recordOf(const Rank& r) {
    if (!r.record) r.record = readFailureRecord(r.failure_file);
    return r.record;
  }

  static int64_t systemNowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // The failed rank to blame (root_cause.h): among the ranks reaped with a failure (not stopped by ringrun),
  // those still running that recorded one, and those found stopped (their peers time out waiting for them).
  // Called at the first failure, so at least one exists.
  static Rank& rootCause(std::vector<Rank>& ranks) {
    std::vector<FailedRank> failed;
    std::vector<Rank*> who;
    for (Rank& r : ranks) {
      const bool failed_itself = r.status && !r.status->success() && !r.stopped_by_us;
      const std::optional<FailureRecord>& record = recordOf(r);
      if (!record) noteIfStopped(r);
      if (!failed_itself && !(record && !r.status) && r.stopped_state.empty()) continue;
      FailedRank f;
      f.rank = r.rank;
      f.record = record;
      f.stopped = !r.stopped_state.empty();
      f.ended_ns = f.stopped ? systemNowNs() : r.ended_ns;
      if (r.status) {
        f.killed_by_signal = r.status->signaled;
        if (!r.status->signaled) f.exit_code = r.status->code;
      }
      failed.push_back(std::move(f));
      who.push_back(&r);
    }
    RT_CHECK(!failed.empty(), "no failed rank to blame");
    return *who[pickRootCause(failed)];
  }

  // A rank still running but stopped (SIGSTOP, Ctrl-Z, a debugger) when the job fails: its peers time out
  // waiting for it. Looked at before ringrun's own SIGCONT/SIGTERM.
  static void noteIfStopped(Rank& r) {
    if (r.status) return;
    const std::string state = processState(r.pid);
    if (isStoppedState(state)) r.stopped_state = state;
  }

  // The job's end as published for the other nodes: "fail <node> rank <R> <how>[: <first line of its
  // message>]", so that they can say why, not only who.
  std::string failureEnd(const Rank& r, const Rank* first_ended) const {
    std::string end = "fail " + std::to_string(o_.node_rank) + " rank " + std::to_string(r.rank) + " " +
                      blameOf(r, first_ended).what;
    if (const std::optional<FailureRecord>& record = recordOf(r)) {
      end += ": " + record->message.substr(0, std::min<size_t>(record->message.find('\n'), 500));
    } else if (lastingExecError(r.exec_error)) {
      end += kCannotRunText + o_.program_path + ": " + std::strerror(r.exec_error) + kNotRestartableText;
    }
    return end;
  }

  // How the blamed rank failed, and the job's exit code for it: "exited with code 2" when it ended with its
  // failure; for a rank that recorded one and was stopped, or had not ended yet, "failed with exit code 2
  // (then killed by SIGTERM as the job stopped)" or "(recorded before it ended)". Never code 0: the job failed.
  struct Blame {
    std::string what;
    int exit_code;
  };
  static Blame blameOf(const Rank& r, const Rank* first_ended) {
    if (!r.stopped_state.empty()) {  // the job's code is that of the failure it caused (a timeout, mostly)
      const int code = first_ended && first_ended->status ? first_ended->status->exitCode() : kExitFailure;
      return {"was " + r.stopped_state + " (SIGSTOP, Ctrl-Z or a debugger) when the job failed" +
                  (r.status ? "; then " + r.status->describe() + " as the job stopped" : ""),
              code == 0 ? kExitFailure : code};
    }
    const std::optional<FailureRecord>& record = recordOf(r);
    const bool own_end = r.status && !r.status->success() &&
                         (!r.stopped_by_us || !record || (!r.status->signaled && r.status->code == record->exit_code));
    if (own_end || !record) {
      const int code = r.status ? r.status->exitCode() : kExitFailure;
      return {r.status ? r.status->describe() : "failed", code == 0 ? kExitFailure : code};
    }
    const int code = record->exit_code >= 1 && record->exit_code <= 255 ? record->exit_code : kExitFailure;
    return {"failed with exit code " + std::to_string(code) +
                (r.status ? " (then " + r.status->describe() + " as the job stopped)" : " (recorded before it ended)"),
            code};
  }

  // A rank's recorded message, each line a line of ringrun's: "rank 1 failed with: ..." (unless its last
  // lines already hold the first line), or `lead` for another node's failure.
  static void sayRecord(const Rank& r, const std::string& lead) {
    const std::optional<FailureRecord>& record = recordOf(r);
    if (!record) return;
    const std::string first_line = record->message.substr(0, record->message.find('\n'));
    if (lead.empty() && std::any_of(r.tail.begin(), r.tail.end(), [&](const std::string& line) {
          return line.find(first_line) != std::string::npos;
        })) {
      return;
    }
    std::istringstream lines(record->message);
    std::string line;
    bool first = true;
    while (std::getline(lines, line)) {
      say(first ? (lead.empty() ? "rank " + std::to_string(r.rank) + " failed with: " : lead) + line : "  " + line);
      first = false;
    }
  }

  AttemptResult runAttempt(int attempt) {
    store_->set(attemptKey(attempt, "ready/" + std::to_string(o_.node_rank)), dist::toBytes("1"));
    std::vector<std::string> ready;
    for (int n = 0; n < o_.nnodes; ++n) ready.push_back(attemptKey(attempt, "ready/" + std::to_string(n)));
    // A refusal counts until the first attempt starts: a stray ringrun refused later (another job's
    // settings on this port) must not end this job at a restart.
    waitKeys(ready, "the start of attempt " + std::to_string(attempt) + " on all nodes", attempt == 0);
    lost_nodes_.clear();

    std::string log_dir;
    if (!run_log_dir_.empty()) log_dir = run_log_dir_ + "/attempt" + std::to_string(attempt);

    ProcessGroup group;
    std::vector<Rank> ranks(static_cast<size_t>(o_.nproc_per_node));
    std::map<pid_t, Rank*> by_pid;
    std::map<int, std::pair<Rank*, bool>> by_fd;  // fd -> (rank, is stderr)
    const auto pumpOf = [](const std::pair<Rank*, bool>& owner) -> OutputPump& {
      return owner.second ? *owner.first->err_pump : *owner.first->out_pump;
    };
    for (int local = 0; local < o_.nproc_per_node; ++local) {
      Rank& r = ranks[static_cast<size_t>(local)];
      r.local_rank = local;
      r.rank = o_.node_rank * o_.nproc_per_node + local;
      std::string out_log, err_log;
      if (!log_dir.empty()) {
        const std::string dir = log_dir + "/rank" + std::to_string(r.rank);
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) {  // a full disk, no inodes left: the job goes on, its output to the terminal only
          say("cannot create the log directory " + dir + " (" + ec.message() + "): rank " + std::to_string(r.rank) +
              "'s output is not copied there");
        } else {
          out_log = dir + "/stdout.log";
          err_log = dir + "/stderr.log";
        }
      }
      r.out_pump = std::make_unique<OutputPump>(r.rank, consoleOut(), out_log, &r.tail);
      r.err_pump = std::make_unique<OutputPump>(r.rank, consoleErr(), err_log, &r.tail);
      r.failure_file = failure_records_.pathFor(attempt, r.rank);
      ChildSpec spec{o_.program_path, o_.command, childEnv(r, attempt), {}};
      if (!rank_cpus_.empty()) spec.cpus = rank_cpus_[static_cast<size_t>(local)];
      Child child = spawnChild(spec, group);
      r.pid = child.pid;
      r.out = std::move(child.out);
      r.err = std::move(child.err);
      r.exec_report = std::move(child.exec_report);
      by_pid[r.pid] = &r;
      by_fd[r.out.get()] = {&r, false};
      by_fd[r.err.get()] = {&r, true};
    }

    auto succeeded = std::make_shared<std::atomic<bool>>(false);
    EndWatcher watcher(*store_, attemptKey(attempt, "end"), heartbeat(attempt, succeeded));
    const StallClock stall;  // whether this ringrun stood still while the attempt ran
    stood_still_ = std::chrono::milliseconds(0);  // an earlier attempt's is not this one's
    int running = o_.nproc_per_node;
    bool guardian_alive = true;
    bool end_known = false;
    bool published = false;
    std::string end_value;
    Rank* first_failed = nullptr;  // the root cause (rootCause())
    Rank* first_ended = nullptr;   // the first rank reaped with a failure, of the reap that found one
    int interrupt_signal = 0;
    std::optional<Clock::time_point> kill_at;
    bool escalated = false;
    bool killed_on_second_signal = false;
    std::string remote_failure;
    std::string recorded_end;  // the attempt's end as publishEnd() found it recorded, once this node failed

    // A child of ringrun outside the ranks' group, which killpg on that group does not reach: signalled by its
    // pid, or with the group it leads if it made one (setsid), so that what it started there goes with it.
    // Only once, where the group's signal reached it: a process that reads its signals at once (a nested
    // ringrun) would take a second copy for a second Ctrl-C. Safe while `pid` is unreaped: neither it nor
    // the id of the group it leads can be reused before then.
    auto signalOutsideGroup = [&](pid_t pid, int sig) {
      const pid_t its_group = ::getpgid(pid);
      if (its_group == pid) {
        ::killpg(pid, sig);
      } else if (its_group != group.id()) {
        ::kill(pid, sig);
      }
    };

    // The ranks' group, and each rank not yet reaped outside it: one that left the group (setsid, a wrapper
    // that calls setpgid) would outlive the grace period and a second Ctrl-C.
    auto signalRanks = [&](int sig) {
      group.signal(sig);
      for (const Rank& r : ranks) {
        if (!r.status) signalOutsideGroup(r.pid, sig);
      }
    };

    // What the job started whose parent died (a rank's setsid child after the rank, a daemon) is ringrun's
    // child now (a subreaper). Only when the job is stopped: after a job that ended well, a daemon is left to
    // live (and named).
    auto signalOrphans = [&](int sig) {
      for (const pid_t pid : unreapedChildren()) {
        if (pid != group.guardianPid() && by_pid.count(pid) == 0) signalOutsideGroup(pid, sig);
      }
    };

    auto stopRanks = [&](int sig) {
      if (kill_at) return;
      for (Rank& r : ranks) {
        if (r.status) continue;
        // One that already ended, not yet reaped (two ranks failing at once), ended on its own: peeked at,
        // left for the SIGCHLD loop to reap.
        siginfo_t info{};
        const bool ended = ::waitid(P_PID, static_cast<id_t>(r.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                           info.si_pid == r.pid;
        r.stopped_by_us = !ended;
      }
      signalRanks(sig);
      signalOrphans(sig);
      signalRanks(SIGCONT);  // a stopped rank (SIGSTOP, Ctrl-Z) gets to handle it, not only the SIGKILL after
      signalOrphans(SIGCONT);
      kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.grace_period_s));
    };

    // A rank that ended well while others run: if they still run kStragglerNotice later (a rank stopped or
    // hung after the job's work, which ringrun cannot tell from one still working), they are named once,
    // with their process state, so that a job that does not end says why.
    std::optional<Clock::time_point> straggler_notice_at;
    std::string first_done;
    bool node_done_published = false;  // this node's first rank that ended well, for the other nodes' reports

    std::vector<pollfd> fds;
    std::vector<char> buf(65536);
    // Once every rank and the guardian are reaped, a process that left the job's group (setsid, a daemon)
    // may still hold a rank's output pipe: read it for the grace period, then stop reading.
    std::optional<Clock::time_point> close_pipes_at;
    while (running > 0 || guardian_alive || !by_fd.empty() || !end_known) {
      if (running == 0 && !guardian_alive) group.forget();
      if (running == 0 && !guardian_alive && !by_fd.empty() && !close_pipes_at) {
        close_pipes_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(std::max(1.0, o_.grace_period_s)));
      }
      if (close_pipes_at && (killed_on_second_signal || Clock::now() >= *close_pipes_at)) {
        // What is in a pipe now is read first (a second signal cuts the grace period short, not the ranks'
        // last lines); a pipe that reaches end-of-file is not held by anyone. Processes of the job's group
        // that were just SIGKILLed may take a moment to let go of theirs: a pipe gets until `settle` to end.
        std::set<int> holders;
        const auto settle = Clock::now() + 200ms;
        for (auto it = by_fd.begin(); it != by_fd.end();) {
          Rank& r = *it->second.first;
          OutputPump& pump = pumpOf(it->second);
          bool ended = false;
          size_t drained = 0;  // a daemon that keeps writing would keep this loop going: 1 MiB at most
          for (pollfd p{it->first, POLLIN, 0};
               drained < (1u << 20) && ::poll(&p, 1, msUntil(settle)) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));) {
            const ssize_t n = ::read(it->first, buf.data(), buf.size());
            if (n > 0) {
              drained += static_cast<size_t>(n);
              pump.feed(buf.data(), static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
              ended = true;
              break;
            }
          }
          if (!ended) holders.insert(r.rank);
          pump.finish();
          (it->second.second ? r.err : r.out).reset();
          it = by_fd.erase(it);
        }
        close_pipes_at.reset();
        if (!holders.empty()) {
          say(fmt::format("rank(s) {} ended, but a process they started outside the job's process group still "
                          "holds their output; no longer reading it", fmt::join(holders, ", ")));
        }
        continue;  // the loop's condition may now hold: nothing is left to wait for
      }
      if (running == 0 && !group.released()) {
        group.release();  // lets the guardian kill leftovers (grandchildren holding our pipes) and exit
        // A stopped job's leftovers outside the group (children of a rank that made a group of its own, which
        // may ignore the SIGTERM their rank died of) go too: the job is over, not ended well.
        if (kill_at) signalOrphans(SIGKILL);
      }
      if (running == 0 && !published) {
        published = true;
        if (first_failed == nullptr && interrupt_signal == 0 && remote_failure.empty()) {
          succeeded->store(true);
          try {
            publishSuccess(attempt);
          } catch (const CommError& e) {
            say("cannot reach the job's store: " + std::string(e.what()) + " (trying again every second)");
          }
        }
      }
      fds.clear();
      fds.push_back({signals_.fd(), POLLIN, 0});
      fds.push_back({end_known ? -1 : watcher.fd(), POLLIN, 0});
      // A stream whose reader lags holds its ranks' pipes unread (they wait, as on a plain pipe), while the
      // job runs; a stopping job's or an ended rank's pipes are read regardless (console.h drops past its
      // limit) so that every rank can end and every pipe close.
      const bool out_full = consoleOut().backlog() >= kConsoleBacklog;
      const bool err_full = consoleErr().backlog() >= kConsoleBacklog;
      bool held = false;
      for (const auto& [fd, owner] : by_fd) {
        const bool hold = (owner.second ? err_full : out_full) && !kill_at && !owner.first->status;
        held = held || hold;
        fds.push_back({hold ? -1 : fd, POLLIN, 0});
      }
      int timeout_ms = held ? 20 : -1;  // re-check the backlog
      const auto wakeBy = [&](Clock::time_point when) {  // poll returns by `when` at the latest
        const int until = msUntil(when);
        timeout_ms = timeout_ms < 0 ? until : std::min(timeout_ms, until);
      };
      if (close_pipes_at) wakeBy(*close_pipes_at);
      if (kill_at && !escalated && running > 0) wakeBy(*kill_at);
      if (straggler_notice_at) wakeBy(*straggler_notice_at);
      // An unfinished line goes out alone once its rank has written nothing for a while; not from a pipe held
      // (the rest of the line may wait unread in it).
      for (size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].fd < 0) continue;
        if (const auto due = pumpOf(by_fd.at(fds[i].fd)).partialDue()) wakeBy(*due);
      }
      const int rc = ::poll(fds.data(), fds.size(), timeout_ms);
      RT_CHECK(rc >= 0 || errno == EINTR, "poll: ", std::strerror(errno));

      if (straggler_notice_at && Clock::now() >= *straggler_notice_at) {
        straggler_notice_at.reset();
        if (running > 0 && !kill_at) {
          std::vector<std::string> still;
          bool any_stopped = false;
          for (const Rank& r : ranks) {
            if (r.status) continue;
            const std::string state = processState(r.pid);
            any_stopped = any_stopped || isStoppedState(state);
            still.push_back(fmt::format("rank {} (pid {}, {})", r.rank, r.pid, state));
          }
          say(fmt::format("{} ended well {} s ago, and {} still run{}: waiting for them ({}; Ctrl-C stops the job)",
                          first_done, kStragglerNotice.count(), fmt::join(still, ", "), still.size() == 1 ? "s" : "",
                          any_stopped ? "a stopped rank goes on after SIGCONT"
                                      : "still writing its files, or hung after its work?"));
        }
      }

      if (kill_at && !escalated && running > 0 && Clock::now() >= *kill_at) {
        escalated = true;
        signalRanks(SIGKILL);
        signalOrphans(SIGKILL);
      }
      if (fds[0].revents & POLLIN) {
        for (int sig : signals_.drain()) {
          if (isNotice(sig)) {
            if (running > 0) {
              say("got " + signalName(sig) + ": passing it to the ranks (the job goes on)");
              signalRanks(sig);
            }
            continue;
          }
          if (sig == SIGCHLD) {
            int status = 0;
            pid_t pid;
            bool failure = false;
            while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
              if (pid == group.guardianPid()) {
                guardian_alive = false;
                // Killed from outside (not by release(), nor by the group's SIGKILL after the grace period,
                // which reaches it too): the ranks run on, without the safety net.
                if (!group.released() && !escalated) {
                  say(fmt::format("its guardian process (pid {}) {} while the ranks ran: they go on, but would "
                                  "no longer be stopped if ringrun itself were killed",
                                  pid, ExitStatus::fromWaitStatus(status).describe()));
                }
                continue;
              }
              auto it = by_pid.find(pid);
              if (it == by_pid.end()) continue;
              Rank& r = *it->second;
              r.status = ExitStatus::fromWaitStatus(status);
              r.exec_error = execErrorOf(r.exec_report);  // written before the child's _exit, if at all
              r.ended_ns = systemNowNs();
              --running;
              if (r.status->success() && running > 0 && first_done.empty()) {
                first_done = "rank " + std::to_string(r.rank);
                straggler_notice_at = Clock::now() + kStragglerNotice;
              }
              if (r.status->success() && !node_done_published && o_.nnodes > 1) {
                publishFirstDone(attempt, r);
                node_done_published = true;
              }
              if (!r.status->success() && !kill_at && !failure) first_ended = &r;
              failure = failure || (!r.status->success() && !kill_at);
            }
            if (failure && !kill_at) {
              // Every failure reaped so far, and every rank that recorded one while it still unwinds, is a
              // candidate: the first to end is often a consequence of another's.
              first_failed = &rootCause(ranks);
              recorded_end = publishEnd(attempt, failureEnd(*first_failed, first_ended));
              stopRanks(SIGTERM);
            }
          } else if (running == 0 && end_known && end_value == "ok" && interrupt_signal == 0) {
            // The job is over and succeeded: only a process holding a rank's pipe (a daemon) or the guardian
            // keeps ringrun. A signal ends that wait, not the job's result. (After a failure it still counts
            // as an interruption, so that --max-restarts does not start the job again.)
            say("got " + signalName(sig) + " after every rank ended: no longer waiting for their output");
            close_pipes_at = Clock::now();
          } else if (interrupt_signal == 0) {
            interrupt_signal = sig;
            // SIGQUIT reaches the ranks as SIGTERM: its default action dumps core (GPU ranks: gigabytes).
            const int to_ranks = sig == SIGQUIT ? SIGTERM : sig;
            say("got " + signalName(sig) + ", passing " + (to_ranks == sig ? "it" : signalName(to_ranks)) + " to the ranks");
            publishEnd(attempt, "interrupted " + std::to_string(o_.node_rank) + " by " + signalName(sig));
            if (kill_at) {
              signalRanks(to_ranks);  // already stopping: pass it on all the same
            } else {
              stopRanks(to_ranks);
            }
          } else {
            say("got " + signalName(sig) + (sig == interrupt_signal ? " again" : " after " + signalName(interrupt_signal)) +
                ": killing the ranks");
            signalRanks(SIGKILL);
            signalOrphans(SIGKILL);
            escalated = true;
            killed_on_second_signal = true;
            g_flush_briefly.store(true);
          }
        }
      }
      if (!end_known && (fds[1].revents & POLLIN)) {
        end_known = true;
        auto [value, error] = watcher.result();
        end_value = value;
        if (!error.empty()) {
          store_lost_ = true;
          remote_failure = "lost the job's store on node 0 (" + error + ")";
          stopRanks(SIGTERM);
        } else if (value != "ok") {
          const bool lost = value.find(kLostText) != std::string::npos;
          if (lost && endNode(value) != o_.node_rank) lost_nodes_.insert(endNode(value));
          if (endNode(value) != o_.node_rank) {
            remote_failure = describeEnd(value);
          } else if (lost) {  // the other nodes stopped hearing this one (a stalled machine, a network cut)
            remote_failure = "the other nodes declared this node lost (" + value.substr(value.find(kLostText)) + ")";
          }
          for (Rank& r : ranks) noteIfStopped(r);  // a rank stopped here may be why another node's timed out
          stopRanks(SIGTERM);
        }
      }
      for (size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].fd < 0) continue;
        auto it = by_fd.find(fds[i].fd);
        OutputPump& pump = pumpOf(it->second);
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
          pump.flushPartial(Clock::now());  // nothing came: the pipe was empty when poll returned
          continue;
        }
        Rank& r = *it->second.first;
        const ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
        if (n > 0) {
          pump.feed(buf.data(), static_cast<size_t>(n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          pump.finish();
          (it->second.second ? r.err : r.out).reset();
          by_fd.erase(it);
        }
      }
    }

    AttemptResult result;
    // Decided from the end every node reads (ours, when this node's failure was recorded first).
    const std::string& end = recorded_end.empty() ? end_value : recorded_end;
    const std::string_view marker = kNotRestartableText;
    int node = -1, rank = -1;
    if (end.size() > marker.size() && end.compare(end.size() - marker.size(), marker.size(), marker) == 0 &&
        std::sscanf(end.c_str(), "fail %d rank %d", &node, &rank) == 2) {
      const size_t cannot = end.find(kCannotRunText);
      if (cannot != std::string::npos) {
        const std::string where = node == o_.node_rank ? "" : " on node " + std::to_string(node);
        const size_t from = cannot + std::string_view(": ").size();  // "cannot run PATH: why", without ": "
        result.not_started =
            "rank " + std::to_string(rank) + where + ": " + end.substr(from, end.size() - marker.size() - from);
      }
    }
    if (first_failed != nullptr) {
      const Rank& r = *first_failed;
      result.outcome = Outcome::kFailed;
      const Blame blame = blameOf(r, first_ended);
      result.exit_code = blame.exit_code;
      say("rank " + std::to_string(r.rank) + " (node " + std::to_string(o_.node_rank) + ", local rank " +
          std::to_string(r.local_rank) + ", pid " + std::to_string(r.pid) + ") " + blame.what);
      sayRecord(r, "");
      if (r.tail.empty()) {
        say("rank " + std::to_string(r.rank) + " printed nothing");
      } else {
        say("last lines of rank " + std::to_string(r.rank) + ":");
        for (const auto& line : r.tail) say("  " + line);
      }
      for (const Rank& other : ranks) {
        if (&other == first_failed || !other.status || other.stopped_by_us) continue;
        const std::string who = "rank " + std::to_string(other.rank) + " (local rank " +
                                std::to_string(other.local_rank) + ", pid " + std::to_string(other.pid) + ")";
        if (!other.status->success()) {
          say(who + " also " + other.status->describe() + ", before it was asked to stop");
        } else if (r.status && other.ended_ns <= r.ended_ns) {
          // A rank that left early (its program ended well before its peers' work): the failure is often its
          // peers timing out while they wait for it.
          say(fmt::format("{} had ended with exit code 0, {:.1f} s before rank {} failed: the others may have been "
                          "waiting for it", who, static_cast<double>(r.ended_ns - other.ended_ns) / 1e9, r.rank));
        }
      }
      sayOtherNodesDoneBefore(attempt, r);
      sayIfThisNodeStoodStill(stall);
    } else if (interrupt_signal != 0) {
      result.outcome = Outcome::kInterrupted;
      result.exit_code = 128 + interrupt_signal;
      say("interrupted by " + signalName(interrupt_signal));
    } else if (!remote_failure.empty() || end_value != "ok") {
      const bool interrupted = end_value.rfind("interrupted", 0) == 0;
      result.outcome = interrupted ? Outcome::kInterrupted : Outcome::kFailed;
      result.exit_code = kExitFailure;
      say("stopping: " + (remote_failure.empty() ? describeEnd(end_value) : remote_failure));
      sayIfThisNodeStoodStill(stall);
      // A failure here may be the cause of the one named (each node judges its own ranks): said too.
      for (const Rank& r : ranks) {
        const std::optional<FailureRecord>& record = recordOf(r);
        if (record && !record->isConsequence()) {
          sayRecord(r, "rank " + std::to_string(r.rank) + " on this node had failed too: ");
        } else if (!r.stopped_state.empty()) {
          say("rank " + std::to_string(r.rank) + " on this node (local rank " + std::to_string(r.local_rank) +
              ", pid " + std::to_string(r.pid) + ") was " + r.stopped_state +
              " (SIGSTOP, Ctrl-Z or a debugger) when the job failed: its peers' timeouts may be its doing");
        }
      }
    }
    if (result.outcome != Outcome::kSuccess) {
      int stopped = 0;
      for (const Rank& r : ranks) stopped += r.stopped_by_us && &r != first_failed ? 1 : 0;  // the blamed is said
      if (stopped > 0) {
        say("stopped " + std::to_string(stopped) + (first_failed ? " other" : "") + " rank(s) on this node" +
            (killed_on_second_signal ? " (SIGKILL on a second signal)"
             : escalated ? " (SIGKILL after the grace period of " + fmt::format("{:g}", o_.grace_period_s) + " s)"
                         : ""));
      }
    }
    return result;
  }

  // Node 0 hosts the store: it stays until every other node that joined is done with it (or --node-timeout
  // passes, or a signal comes). A rendezvous that timed out waits for no node that never came, and none
  // waits for a node the last attempt declared lost. A node that lost the store has nothing to tell it.
  void leave() {
    if (!store_) return;
    if (store_lost_ && !server_) {
      store_.reset();
      return;
    }
    try {
      // A ringrun refused at the rendezvous for its node rank (another ringrun has it) never joined.
      if (joined_) store_->set(key("left/" + std::to_string(o_.node_rank)), dist::toBytes("1"));
      // A node that does not leave within --node-timeout is not coming (its ringrun was killed, say).
      const auto deadline = Clock::now() + std::chrono::duration<double>(o_.node_timeout_s);
      while (server_ && o_.nnodes > 1) {
        std::vector<std::string> awaited;
        std::vector<int> awaited_nodes;
        for (int n = 0; n < o_.nnodes; ++n) {
          const std::string left = key("left/" + std::to_string(n));
          if (n == o_.node_rank || lost_nodes_.count(n) > 0 || !store_->check({key("joined/" + std::to_string(n))}) ||
              store_->check({left})) {
            continue;
          }
          awaited.push_back(left);
          awaited_nodes.push_back(n);
        }
        if (awaited.empty()) break;
        if (Clock::now() >= deadline && stoodStillPastTheNodeTimeout()) {
          // Those nodes counted this one lost while it stood still (said above), and most likely ended.
          say(fmt::format("node{} {} did not confirm the end of the job within --node-timeout {:g} s: {} had most "
                          "likely ended already, having counted this node lost while it stood still",
                          awaited_nodes.size() > 1 ? "s" : "", fmt::join(awaited_nodes, ", "), o_.node_timeout_s,
                          awaited_nodes.size() > 1 ? "they" : "it"));
          break;
        }
        if (Clock::now() >= deadline) {
          // A node whose ringrun was killed (or whose machine went) takes its ranks with it: this node's
          // ranks then fail on a broken connection first, and are blamed above for what is its consequence.
          say(fmt::format("node{} {} did not confirm the end of the job within --node-timeout {:g} s: {} ringrun "
                          "was killed or {} machine is gone; a failure above that reads as a broken connection "
                          "may be a consequence of losing {}",
                          awaited_nodes.size() > 1 ? "s" : "", fmt::join(awaited_nodes, ", "), o_.node_timeout_s,
                          awaited_nodes.size() > 1 ? "their" : "its", awaited_nodes.size() > 1 ? "their" : "its",
                          awaited_nodes.size() > 1 ? "them" : "it"));
          break;
        }
        try {
          store_->wait(awaited, kInterruptCheck);
        } catch (const TimeoutError&) {
        }
        const std::vector<int> pending = signals_.drain();
        if (std::any_of(pending.begin(), pending.end(), [](int sig) { return sig != SIGCHLD && !isNotice(sig); })) {  // told to stop
          g_flush_briefly.store(true);
          break;
        }
      }
    } catch (const CommError& e) {
      if (server_) say("not every node confirmed the end of the job: " + std::string(e.what()));
    }
    store_.reset();
    if (server_) server_->stop();
  }

  const LaunchOptions& o_;
  SignalInbox signals_;  // first member after the options: signals are blocked before any thread starts
  std::string token_;
  std::string agent_id_;
  int master_port_ = 0;
  int world_size_ = 0;
  std::string run_log_dir_;  // with --log-dir: this launch's own folder in it (run_log_dir.h)
  FailureRecordDir failure_records_;  // where the ranks record their failures
  std::vector<std::vector<int>> rank_cpus_;  // with --bind-to cores: each local rank's CPUs; else empty
  std::unique_ptr<dist::TcpStoreServer> server_;
  std::unique_ptr<dist::TcpStoreClient> store_;
  bool joined_ = false;  // this node's entry is in the store (rendezvous got past the node-rank check)
  // The store's refusals (TcpStoreServer::refusals(), node 0) when a wait for the nodes last succeeded: those
  // are not why a later wait times out. Empty before the first, so that a node refused before the first wait
  // began is named.
  std::string refusals_before_;
  bool store_lost_ = false;     // the end watcher lost the store (node 0 silent or gone)
  std::set<int> lost_nodes_;    // other nodes the last attempt's end declared lost: leave() does not wait for them
  std::chrono::milliseconds stood_still_{0};  // the last failed attempt's StallClock::longest()
};

}  // namespace

int runAgent(const LaunchOptions& options) {
  Agent agent(options);
  try {
    return agent.run();
  } catch (const Interrupted& i) {
    say("interrupted by " + signalName(i.signal) + " before the ranks started");
    return 128 + i.signal;
  }
}

void finishOutput(int exit_code) {
  // A signal that came after the job ended (while the nodes left) was taken by the restore: it asked ringrun
  // to end, so the flush is bounded as after a second signal.
  const bool signalled = restoreTerminationSignals(exit_code);
  if (!g_flush_briefly.load() && !signalled) {
    consoleOut().flush();
    consoleErr().flush();
    return;
  }
  // One second for both streams; then out at once, whatever is left: a writer blocked in write() would hold
  // its stream's destructor too (and a notice one stream queues on the other could come after its flush).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  const auto left = [&] {
    return std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      deadline - std::chrono::steady_clock::now()));
  };
  if (consoleOut().flushFor(left())) consoleErr().flushFor(left());
  ::_exit(exit_code);
}

void sayError(const std::string& message) { consoleErr().write("ringrun: error: " + message + "\n"); }

}  // namespace ringtrain::launch
