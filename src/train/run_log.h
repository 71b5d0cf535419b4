// What the trainer tells people while it runs (rank 0): a progress line (a live bar on a terminal, plain
// periodic lines otherwise), per-step metrics as JSON lines, and at the end a PNG of loss and throughput.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace ringtrain::train {

struct StepRecord {
  int64_t step = 0;  // optimizer steps done, 1-based
  int64_t epoch = 0;
  double loss = 0.0;  // mean over ranks of the window ending here (0 when not logged at this step)
  bool has_loss = false;
  double lr = 0.0;
  double pairs_per_second = 0.0;  // global, over the log window ending here (0 when not logged at this step)
  int64_t pairs = 0;              // global positive pairs of this step (metrics.jsonl's pairs_per_s: over step_ms)
  double data_wait_ms = 0.0;
  double sync_wait_ms = 0.0;
  double step_ms = 0.0;
  uint64_t dense_bytes = 0;
  uint64_t sparse_bytes = 0;
};

class RunLog {
 public:
  // `metrics_path` "": no JSON lines. `enabled` false (ranks other than 0): everything is a no-op. `job`
  // (config::hash of the job), when given, goes into the first record of a file begun anew ("job":"..."),
  // so that checkMetricsFile can tell another job's file.
  RunLog(bool enabled, const std::string& metrics_path, int64_t total_steps, int64_t first_step,
         std::string job = "");
  ~RunLog();
  void record(const StepRecord& r);
  // A line on its own (evaluation results, notices) that does not tear the progress bar.
  void note(const std::string& text);
  // An evaluation during the run, in metrics.jsonl after step `step`'s record: {"step":N,"eval":{...}}
  // with `fields_json` (`"hr@10":0.2,...`) inside, for whoever follows HR over the steps from the file
  // (the picture at the end plots loss and throughput only).
  void evaluation(int64_t step, const std::string& fields_json);
  // Writes the records so far to the file (records are buffered between log steps): at a checkpoint, so
  // that a run resumed from it finds every record up to its step.
  void flushMetrics();
  // Why the metrics file could not take the records (a full disk), or "": then nothing more is written to
  // it. Not thrown here: the trainer stops every rank at one collective, rather than rank 0 alone.
  const std::string& failure() const { return failure_; }
  // Ends the progress bar line and writes out the records (a failure to is warned about: it runs in the
  // destructor too).
  void finish();
  // Writes <png_path> with gnuplot from the records; returns "" (with a warning) when gnuplot is missing
  // or fails.
  std::string plot(const std::string& png_path) const;

 private:
  bool enabled_;
  bool tty_;
  int64_t total_steps_;
  int64_t first_step_;
  std::chrono::steady_clock::time_point start_;
  std::string metrics_path_;
  std::string job_;  // written into the next record while the file holds none (then cleared)
  std::ofstream metrics_;
  std::vector<StepRecord> history_;  // logged records only (those with a loss)
  bool bar_open_ = false;

  std::string failure_;

  // After a flush: records in failure_ (naming the file) a write that failed.
  void checkWritten();
  // evaluation() of the step a finished run resumed at: writes `record` in place of the earlier attempt's
  // record of that step. False when there was none to replace, or the file could not be rewritten (warned):
  // then the caller appends `record`.
  bool replaceEarlierEvaluation(int64_t step, const std::string& record);
};

// Chrome trace events (Perfetto / chrome://tracing) of one rank: complete events with microsecond times,
// counted from `origin`. The default, the steady clock's epoch (CLOCK_MONOTONIC, shared by every process on
// a host), lines the ranks of one host up exactly in the merged trace, showing which of them the others
// waited for; ranks on several hosts need an origin they agree on instead (see the trainer).
// Events accumulate in one buffer reserved up front (`reserve_bytes`), not in a string each: hundreds of
// small long-lived blocks allocated among a step's large transient ones kept the heap from reusing freed
// memory, so every traced step touched fresh pages (a 1-rank run grew 0.8 MB a step and ran 3x slower).
class TraceWriter {
 public:
  explicit TraceWriter(int rank, size_t reserve_bytes = 0,
                       std::chrono::steady_clock::time_point origin = std::chrono::steady_clock::time_point{})
      : rank_(rank), origin_(origin) {
    events_.reserve(reserve_bytes);
  }
  void span(const std::string& name, std::chrono::steady_clock::time_point begin,
            std::chrono::steady_clock::time_point end, const std::string& args_json = "{}");
  void counter(const std::string& name, std::chrono::steady_clock::time_point at, double value);
  bool empty() const { return events_.empty(); }
  // The events as a JSON array body (comma-separated objects, no brackets).
  std::string eventsJson() const;
  void writeFile(const std::string& path) const;

 private:
  double micros(std::chrono::steady_clock::time_point t) const;
  int rank_;
  std::chrono::steady_clock::time_point origin_;
  std::string events_;  // ",\n"-prefixed JSON objects
};

// Writes `text` to `path` atomically (temporary file in the same directory, fsync, rename).
void writeFileAtomically(const std::string& path, const std::string& text);

// Keeps the records of the metrics file at `path` up to `last_step`, rewriting it atomically when that drops
// some (and lines that are not whole records: torn by a crash). A path that is not a regular file (none yet,
// a FIFO, a terminal) is left alone. Throws DataError naming the line when the first line is not a record:
// the file is somebody's, not ringtrain's metrics.
// `each_kept`, when given, sees every record kept (line and step), from the same read. Records that end before
// `last_step` (or no file at all) are warned about: those steps have none.
void keepMetricsUpTo(const std::string& path, int64_t last_step,
                     const std::function<void(std::string_view, int64_t)>& each_kept = nullptr);
// keepMetricsUpTo's check alone, changing nothing: run before anything else is changed. With `job`
// (config::hash of this job), a file whose first record names another job ("job":"...", RunLog) is refused
// too (ConfigError): a fresh start would empty it, a resumed run would cut it. Files written before records
// named their job are this job's as far as anyone can tell.
void checkMetricsFile(const std::string& path, const std::string& job = "");

}  // namespace ringtrain::train
