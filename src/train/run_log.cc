#include "train/run_log.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringtrain/core/file_target.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "core/unique_fd.h"

namespace ringtrain::train {
namespace {

std::string duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string rate(double per_second) {
  if (per_second >= 1e6) return fmt::format("{:.2f}M", per_second / 1e6);
  if (per_second >= 1e3) return fmt::format("{:.1f}k", per_second / 1e3);
  return fmt::format("{:.0f}", per_second);
}

// The step of a metrics record ('{"step":N,...}'), or -1 for a line that is not one.
int64_t recordStep(const std::string& line) {
  constexpr std::string_view kPrefix = "{\"step\":";
  constexpr size_t kMaxDigits = 18;  // below int64's range
  if (line.rfind(kPrefix, 0) != 0 || line.back() != '}') return -1;
  int64_t step = 0;
  size_t i = kPrefix.size();
  const size_t first_digit = i;
  for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) {
    if (i - first_digit == kMaxDigits) return -1;
    step = step * 10 + (line[i] - '0');
  }
  return i > first_digit && i < line.size() && line[i] == ',' ? step : -1;
}

// The metrics file's text, or nullopt where there is nothing to read back: no file yet, or not a regular
// file (a FIFO, a terminal, /dev/null), which a run only ever appends to.
std::optional<std::string> readMetricsFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) RT_THROW(DataError, path, ": read error");
  return text.str();
}

// Calls `each(line, step)` for every non-empty line (step -1: not a record). Throws DataError when the first
// one is not a record: then the file is somebody's, not ringtrain's metrics.
void forEachMetricsLine(const std::string& path, const std::string& text,
                        const std::function<void(std::string_view, int64_t)>& each) {
  bool first = true;
  size_t begin = 0;
  for (int64_t line_no = 1; begin < text.size(); ++line_no) {
    const size_t newline = text.find('\n', begin);
    const size_t end = newline == std::string::npos ? text.size() : newline;
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (line.empty()) continue;
    const int64_t step = recordStep(line);
    if (first && step < 0) {
      RT_THROW(DataError, path, ":", line_no, ": not a ringtrain metrics record; log.metrics_file must name a file "
               "of its own (ringtrain rewrites it: a fresh start empties it, a resumed run drops the steps after "
               "its checkpoint)");
    }
    first = false;
    each(line, step);
  }
}

}  // namespace

void checkMetricsFile(const std::string& path, const std::string& job) {
  const auto text = readMetricsFile(path);
  if (!text) return;
  bool first = true;
  forEachMetricsLine(path, *text, [&](std::string_view line, int64_t step) {
    if (!std::exchange(first, false) || job.empty() || step < 0) return;
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object() || !record.contains("job") || !record["job"].is_string()) return;
    const std::string theirs = record["job"].get<std::string>();
    if (theirs == job) return;
    RT_THROW(ConfigError, path, " holds the metrics of another job (config hash ", theirs, "; this job's is ", job,
             "): ringtrain rewrites its metrics file (a fresh start empties it, a resumed run drops the steps after "
             "its checkpoint); give this job a log.metrics_file of its own, or move that one");
  });
}

void keepMetricsUpTo(const std::string& path, int64_t last_step,
                     const std::function<void(std::string_view, int64_t)>& each_kept) {
  const std::optional<std::string> text = readMetricsFile(path);
  std::error_code ec;
  if (!text && last_step > 0 && !std::filesystem::exists(path, ec)) {
    warn("{}: not there, so it holds no records of the {} step(s) before the checkpoint; it starts at step {}", path,
         last_step, last_step + 1);
  }
  if (!text) return;
  std::string kept;
  int64_t dropped_lines = 0;
  int64_t last_kept = 0;
  forEachMetricsLine(path, *text, [&](std::string_view line, int64_t step) {
    // A line that is not a record after the first: torn by a crash (older versions appended after one).
    if (step < 0) ++dropped_lines;
    if (step < 0 || step > last_step) return;
    last_kept = std::max(last_kept, step);
    (kept += line) += '\n';
    if (each_kept) each_kept(line, step);
  });
  if (dropped_lines > 0) warn("{}: {} line(s) that are not whole records dropped", path, dropped_lines);
  // A record per step: a file that ends earlier lost some (a full disk, a copy of an older file).
  if (last_kept < last_step) {
    warn("{}: its records end at step {}, before the checkpoint's step {}: steps {} to {} have none", path, last_kept,
         last_step, last_kept + 1, last_step);
  }
  if (kept != *text) writeFileAtomically(path, kept);
}

void writeFileAtomically(const std::string& requested, const std::string& text) {
  const std::string path = atomicWriteTarget(requested);
  const std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  AtomicFile file(path, "file");  // the callers' files (metrics, trace) need no other name than their path
  file.write(text);
  file.commit();
}

RunLog::RunLog(bool enabled, const std::string& metrics_path, int64_t total_steps, int64_t first_step,
               std::string job)
    : enabled_(enabled),
      tty_(enabled && ::isatty(STDERR_FILENO)),
      total_steps_(total_steps),
      first_step_(first_step),
      start_(std::chrono::steady_clock::now()),
      metrics_path_(metrics_path),
      job_(std::move(job)) {
  if (!enabled_ || metrics_path.empty()) return;
  const std::filesystem::path p(metrics_path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  // A resumed run continues the file from its checkpoint's step: the records after it are of steps trained
  // again (a fresh start, step 0, begins the file anew).
  // The logged records kept (a resumed run's, before its checkpoint) join the history, so that the picture at
  // the end covers the whole run and not only what this attempt trained.
  keepMetricsUpTo(metrics_path, first_step, [&](std::string_view line, int64_t step) {
    if (line.find("\"loss\":") == std::string_view::npos) return;  // not a logged step
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object() || !record.contains("loss") || !record["loss"].is_number() ||
        !record.contains("window_pairs_per_s") || !record["window_pairs_per_s"].is_number()) {
      return;
    }
    StepRecord r;
    r.step = step;
    r.has_loss = true;
    r.loss = record["loss"].get<double>();
    r.pairs_per_second = record["window_pairs_per_s"].get<double>();
    history_.push_back(r);
  });
  // A FIFO is opened only once a reader holds it: a plain open would wait for one for ever, and the other
  // ranks would time out naming rank 0, not the file. The probe stays open until the stream holds the FIFO
  // too: closing it first would give the reader end-of-file (cat ends there) and leave the stream's open
  // waiting for a reader again.
  UniqueFd probe;
  if (std::error_code ec; std::filesystem::is_fifo(metrics_path, ec)) {
    probe.reset(::open(metrics_path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!probe.valid()) {
      RT_THROW(DataError, metrics_path, ": cannot open the metrics file for writing: ",
               errno == ENXIO ? "it is a FIFO that nobody reads (start its reader first, or name a file)"
                              : std::strerror(errno));
    }
  }
  metrics_.open(metrics_path, std::ios::app);
  if (!metrics_) RT_THROW(DataError, metrics_path, ": cannot open the metrics file for writing: ", std::strerror(errno));
  // Only the first record of a file names the job: one resumed keeps its first record's.
  std::error_code ec;
  if (std::filesystem::is_regular_file(metrics_path, ec) && std::filesystem::file_size(metrics_path, ec) > 0) {
    job_.clear();
  }
}

RunLog::~RunLog() { finish(); }

void RunLog::record(const StepRecord& r) {
  if (!enabled_) return;
  if (metrics_.is_open()) {
    metrics_ << fmt::format(
        "{{\"step\":{},\"epoch\":{},{}\"lr\":{:.6g},\"pairs_per_s\":{:.1f},\"step_ms\":{:.3f},"
        "\"data_wait_ms\":{:.3f},\"sync_wait_ms\":{:.3f},\"dense_bytes\":{},\"sparse_bytes\":{}{}}}\n",
        r.step, r.epoch,
        r.has_loss ? fmt::format("\"loss\":{:.6f},\"window_pairs_per_s\":{:.1f},", r.loss, r.pairs_per_second)
                   : std::string(),
        r.lr,
        r.step_ms > 0 ? static_cast<double>(r.pairs) / (r.step_ms / 1e3) : 0.0, r.step_ms, r.data_wait_ms,
        r.sync_wait_ms, r.dense_bytes, r.sparse_bytes,
        job_.empty() ? std::string() : ",\"job\":\"" + std::exchange(job_, std::string()) + "\"");
  }
  if (!r.has_loss) return;
  history_.push_back(r);
  if (metrics_.is_open()) {
    metrics_.flush();
    checkWritten();
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done_here = r.step - first_step_;
  const double eta = done_here > 0 ? elapsed / done_here * (total_steps_ - r.step) : -1;
  const std::string line = fmt::format("step {}/{} epoch {} loss {:.4f} lr {:.3g} {} pairs/s ETA {}", r.step,
                                       total_steps_, r.epoch, r.loss, r.lr, rate(r.pairs_per_second), duration(eta));
  if (tty_) {
    const int width = 24;
    const int filled = total_steps_ > 0 ? static_cast<int>(width * r.step / total_steps_) : 0;
    std::fprintf(stderr, "\r[%s%s] %s\033[K", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), line.c_str());
    std::fflush(stderr);
    bar_open_ = true;
  } else {
    info("{}", line);
  }
}

void RunLog::note(const std::string& text) {
  if (!enabled_) return;
  if (bar_open_) std::fputc('\n', stderr), bar_open_ = false;
  info("{}", text);
}

void RunLog::evaluation(int64_t step, const std::string& fields_json) {
  if (!enabled_ || !metrics_.is_open()) return;
  const std::string record = fmt::format("{{\"step\":{},\"eval\":{{{}}}}}\n", step, fields_json);
  if (step == first_step_ && step > 0 && replaceEarlierEvaluation(step, record)) return;
  if (!metrics_.is_open()) return;
  metrics_ << record;
  metrics_.flush();
  checkWritten();
}

bool RunLog::replaceEarlierEvaluation(int64_t step, const std::string& record) {
  // A finished run resumed evaluates its last step again: its new record replaces the one the earlier
  // attempt wrote, in one atomic rewrite (the old one stays until the new one is there).
  metrics_.flush();
  checkWritten();
  if (!metrics_.is_open()) return false;
  bool rewritten = false;
  try {
    const std::optional<std::string> text = readMetricsFile(metrics_path_);
    if (!text) return false;
    std::string kept;
    bool replaced = false;
    forEachMetricsLine(metrics_path_, *text, [&](std::string_view line, int64_t at) {
      const bool old_evaluation = at == step && line.find("\"eval\":") != std::string_view::npos;
      replaced = replaced || old_evaluation;
      if (!old_evaluation) (kept += line) += '\n';
    });
    if (!replaced) return false;
    metrics_.close();
    writeFileAtomically(metrics_path_, kept + record);
    rewritten = true;
  } catch (const std::exception& e) {
    // Its directory not writable (the file is), say: the new record goes after the old one, as appended.
    warn("{}: cannot replace the earlier record of step {}'s evaluation ({}); the new one follows it", metrics_path_,
         step, e.what());
  }
  if (!metrics_.is_open()) metrics_.open(metrics_path_, std::ios::app);
  if (!metrics_) {
    failure_ = fmt::format("{}: cannot reopen the metrics file ({})", metrics_path_, std::strerror(errno));
    metrics_.close();
  }
  return rewritten;
}

void RunLog::flushMetrics() {
  if (!metrics_.is_open()) return;
  metrics_.flush();
  checkWritten();
}

void RunLog::checkWritten() {
  if (metrics_) return;
  // errno is what the last failed write left, maybe long before this flush: named only when it is one a
  // write fails with for want of room or a device.
  const int err = errno;
  const bool telling = err == ENOSPC || err == EDQUOT || err == EIO || err == EFBIG || err == EROFS || err == EPIPE;
  metrics_.close();  // nothing more is written to a file that lost records
  failure_ = fmt::format("{}: cannot write the metrics ({}); records are missing from it", metrics_path_,
                         telling ? std::strerror(err) : "a write failed");
}

void RunLog::finish() {
  if (bar_open_) std::fputc('\n', stderr), bar_open_ = false;
  if (!metrics_.is_open()) return;
  metrics_.flush();
  if (!metrics_) warn("{}: cannot write the last metrics records", metrics_path_);
}

namespace {
// A gnuplot string literal for `text`: in single quotes nothing is special but the quote, which is doubled.
std::string gnuplotQuoted(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Runs `gnuplot SCRIPT` without a shell (a path may hold any character), its output discarded. Returns ""
// when it exits 0, else how it ended.
std::string runGnuplot(const std::string& script_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string program = "gnuplot", script = script_path;
  char* argv[] = {program.data(), script.data(), nullptr};
  pid_t pid = -1;
  const int err = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return fmt::format("cannot start it: {}", std::strerror(err));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return fmt::format("cannot wait for it: {}", std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 ? "" : fmt::format("exit {}", WEXITSTATUS(status));
  return fmt::format("killed by signal {}", WTERMSIG(status));
}
}  // namespace

std::string RunLog::plot(const std::string& png_path) const {
  if (!enabled_) return "";
  if (history_.size() < 2) {  // a line needs two points: the log steps (log.every_steps) are what it plots
    info("no {}: the run logged {} step(s) (log.every_steps), a plot needs 2", png_path, history_.size());
    return "";
  }
  // Through a link to its target, as the run's other files; what is not a regular file is left as it is.
  std::string target;
  try {
    target = atomicWriteTarget(png_path);
  } catch (const DataError& e) {
    warn("no plot: {}", e.what());
    return "";
  }
  const std::string data_path = png_path + ".dat";
  std::string data;
  for (const StepRecord& r : history_) data += fmt::format("{} {:.6f} {:.1f}\n", r.step, r.loss, r.pairs_per_second);
  writeFileAtomically(data_path, data);
  // gnuplot draws into a hidden temporary beside the target, renamed over it once whole.
  removeStaleTempsOf(target, "a plot");
  removeStaleTempsOf(target, "a plot", "gp");
  const std::string png_tmp = tempPathFor(target);
  const std::string script_path = tempPathFor(target, "gp");
  const std::string script = fmt::format(
      "set terminal png size 1000,700\n"
      "set output {0}\n"
      "set multiplot layout 2,1 title 'ringtrain'\n"
      "set xlabel 'step'\nset ylabel 'loss'\nset grid\n"
      "plot {1} using 1:2 with lines lw 2 title 'loss (mean over ranks)'\n"
      "set ylabel 'pairs/s'\n"
      "plot {1} using 1:3 with lines lw 2 title 'global pairs/s'\n"
      "unset multiplot\n",
      gnuplotQuoted(png_tmp), gnuplotQuoted(data_path));
  std::ofstream(script_path) << script;  // a temporary itself: no atomic write (its own temporary) needed
  const std::string failed = runGnuplot(script_path);
  std::remove(script_path.c_str());
  if (!failed.empty()) {
    std::remove(png_tmp.c_str());
    warn("gnuplot is not available or failed ({}); no plot written (install gnuplot-nox)", failed);
    return "";
  }
  if (std::rename(png_tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    std::remove(png_tmp.c_str());
    warn("no plot: cannot put it at {} ({})", target, std::strerror(err));
    return "";
  }
  return png_path;
}

double TraceWriter::micros(std::chrono::steady_clock::time_point t) const {
  return std::chrono::duration<double, std::micro>(t - origin_).count();
}

namespace {
// A JSON string literal: quotes, backslashes and control characters escaped, invalid UTF-8 replaced.
std::string quoted(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

void TraceWriter::span(const std::string& name, std::chrono::steady_clock::time_point begin,
                       std::chrono::steady_clock::time_point end, const std::string& args_json) {
  fmt::format_to(std::back_inserter(events_),
                 ",\n{{\"name\":{},\"ph\":\"X\",\"pid\":{},\"tid\":0,\"ts\":{:.3f},\"dur\":{:.3f},\"args\":{}}}",
                 quoted(name), rank_, micros(begin), std::chrono::duration<double, std::micro>(end - begin).count(),
                 args_json);
}

void TraceWriter::counter(const std::string& name, std::chrono::steady_clock::time_point at, double value) {
  fmt::format_to(std::back_inserter(events_),
                 ",\n{{\"name\":{},\"ph\":\"C\",\"pid\":{},\"ts\":{:.3f},\"args\":{{\"value\":{}}}}}", quoted(name),
                 rank_, micros(at), value);
}

std::string TraceWriter::eventsJson() const {
  std::string out = fmt::format(R"({{"name":"process_name","ph":"M","pid":{},"args":{{"name":"rank {}"}}}})",
                                rank_, rank_);
  return out + events_;
}

void TraceWriter::writeFile(const std::string& path) const {
  writeFileAtomically(path, "{\"traceEvents\":[\n" + eventsJson() + "\n]}\n");
}

}  // namespace ringtrain::train
