#include "config/schema.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

namespace ringtrain::config {
namespace {

constexpr double kNoLimit = std::numeric_limits<double>::infinity();

std::string parseScalar(const std::string& text, bool& out) {
  // YAML 1.1's spellings (each word lower case, capitalised or upper case), and 1 / 0.
  static const std::vector<std::string> kTrue = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "1"};
  static const std::vector<std::string> kFalse = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "0"};
  if (std::find(kTrue.begin(), kTrue.end(), text) != kTrue.end()) return out = true, "";
  if (std::find(kFalse.begin(), kFalse.end(), text) != kFalse.end()) return out = false, "";
  return "expected true or false (or yes/no, on/off, 1/0), got '" + text + "'";
}

template <typename Int>
std::string parseInteger(const std::string& text, Int& out) {
  Int value{};
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  // YAML writes a sign either way ("+2", as a number may be written "+0.5"); from_chars reads only '-'.
  if (text.size() > 1 && text[0] == '+' && text[1] >= '0' && text[1] <= '9') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec == std::errc::result_out_of_range) return "integer '" + text + "' is out of range";
  if (ec != std::errc() || ptr != end) return "expected an integer, got '" + text + "'";
  out = value;
  return "";
}

std::string parseScalar(const std::string& text, int& out) { return parseInteger(text, out); }
std::string parseScalar(const std::string& text, int64_t& out) { return parseInteger(text, out); }

std::string parseScalar(const std::string& text, double& out) {
  if (text.empty()) return "expected a number, got ''";
  // strtod also reads hexadecimal (0x1p-3); integers here are decimal only, and so are numbers.
  if (text.find_first_of("xX") != std::string::npos) return "expected a decimal number, got '" + text + "'";
  errno = 0;
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return "expected a number, got '" + text + "'";
  // ERANGE also flags underflow: 1e-320 reads as the nearest (subnormal) double, but 1e-400 would read as
  // 0, which is not what was written (and an eps of 0 would then be refused as "got 0").
  if (errno == ERANGE && std::fabs(value) >= 1.0) return "number '" + text + "' is out of range";
  if (errno == ERANGE && value == 0.0) {
    return "number '" + text + "' is below the smallest double (about 4.9e-324) and would read as 0; write 0 if that is meant";
  }
  if (!std::isfinite(value)) return "expected a finite number, got '" + text + "'";
  out = value;
  return "";
}

std::string parseScalar(const std::string& text, std::string& out) {
  // A quoted YAML string may hold "\0"; every path and name ends there once it reaches the system, so the
  // job would use a shorter one than it says (and its messages would stop at it).
  if (text.find('\0') != std::string::npos) return "holds a NUL character (\\0), where every path and name would end";
  out = text;
  return "";
}

std::string printScalar(bool v) { return v ? "true" : "false"; }
std::string printScalar(int v) { return std::to_string(v); }
std::string printScalar(int64_t v) { return std::to_string(v); }
// -0.0 prints as 0: the two are one setting, and the job's hash is taken over the printed form.
std::string printScalar(double v) { return fmt::format("{}", v == 0.0 ? 0.0 : v); }
std::string printScalar(const std::string& v) { return v; }

template <typename T>
constexpr FieldType typeOf() {
  if constexpr (std::is_same_v<T, bool>) return FieldType::kBool;
  if constexpr (std::is_same_v<T, int> || std::is_same_v<T, int64_t>) return FieldType::kInt;
  if constexpr (std::is_same_v<T, double>) return FieldType::kDouble;
  return FieldType::kString;
}

template <typename Section, typename T>
Field makeField(const char* section, const char* key, Section JobConfig::*sec, T Section::*member,
                double min_value = -kNoLimit, double max_value = kNoLimit) {
  Field f;
  f.section = section;
  f.key = key;
  f.type = typeOf<T>();
  f.min_value = min_value;
  f.max_value = max_value;
  f.assign = [sec, member](JobConfig& c, const std::string& text) {
    return parseScalar(text, (c.*sec).*member);
  };
  f.print = [sec, member](const JobConfig& c) { return printScalar((c.*sec).*member); };
  f.check = [sec, member, min_value, max_value](const JobConfig& c) -> std::string {
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      const double v = static_cast<double>((c.*sec).*member);
      if (v < min_value || v > max_value) {
        if (max_value == kNoLimit) return fmt::format("must be >= {}, got {}", min_value, (c.*sec).*member);
        return fmt::format("must be between {} and {}, got {}", min_value, max_value, (c.*sec).*member);
      }
    }
    return "";
  };
  return f;
}

// A number in [min_value, below): the limit itself breaks what uses it (Adam divides by 1 - beta^t).
template <typename Section>
Field makeBelow(const char* section, const char* key, Section JobConfig::*sec, double Section::*member,
                double min_value, double below) {
  Field f = makeField(section, key, sec, member, min_value, below);
  f.check = [sec, member, min_value, below](const JobConfig& c) -> std::string {
    const double v = (c.*sec).*member;
    if (v >= min_value && v < below) return "";
    return fmt::format("must be >= {} and below {}, got {}", min_value, below, v);
  };
  return f;
}

// A number above `above` (exclusive): an optimizer's eps of 0 divides 0 by 0 for a row without history.
template <typename Section>
Field makeAbove(const char* section, const char* key, Section JobConfig::*sec, double Section::*member,
                double above) {
  Field f = makeField(section, key, sec, member, above);
  f.check = [sec, member, above](const JobConfig& c) -> std::string {
    const double v = (c.*sec).*member;
    if (v > above) return "";
    return fmt::format("must be > {}, got {}", above, v);
  };
  return f;
}

// A string that must not be empty; `what` says what to write instead.
template <typename Section>
Field makeNonEmpty(const char* section, const char* key, Section JobConfig::*sec, std::string Section::*member,
                   std::string what = "a directory; '.' is the current one") {
  Field f = makeField(section, key, sec, member);
  f.check = [sec, member, what](const JobConfig& c) -> std::string {
    return ((c.*sec).*member).empty() ? "must not be empty (" + what + ")" : "";
  };
  return f;
}

template <typename Section>
Field makeChoice(const char* section, const char* key, Section JobConfig::*sec, std::string Section::*member,
                 std::vector<std::string> choices) {
  Field f = makeField(section, key, sec, member);
  f.type = FieldType::kChoice;
  f.choices = choices;
  f.check = [sec, member, choices](const JobConfig& c) -> std::string {
    const std::string& v = (c.*sec).*member;
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
    return fmt::format("must be one of {}, got '{}'", fmt::join(choices, ", "), v);
  };
  return f;
}

std::vector<Field> buildSchema() {
  using J = JobConfig;
  std::vector<Field> s;
  // run
  s.push_back(makeField("run", "name", &J::run, &RunOptions::name));
  s.push_back(makeField("run", "seed", &J::run, &RunOptions::seed, 0));
  s.push_back(makeChoice("run", "device", &J::run, &RunOptions::device, {"cpu", "cuda"}));
  s.push_back(makeField("run", "threads", &J::run, &RunOptions::threads, 1, 1024));
  {
    Field epochs = makeField("run", "epochs", &J::run, &RunOptions::epochs, 0);
    epochs.relation = [](const JobConfig& c) -> std::string {
      if (c.run.epochs == 0 && c.run.max_steps == 0) return "0 with run.max_steps 0 trains nothing: set one of them";
      return "";
    };
    s.push_back(epochs);
  }
  s.push_back(makeField("run", "max_steps", &J::run, &RunOptions::max_steps, 0));
  s.push_back(makeNonEmpty("run", "output_dir", &J::run, &RunOptions::output_dir));
  s.push_back(makeField("run", "deterministic", &J::run, &RunOptions::deterministic));
  s.push_back(makeField("run", "pin_threads", &J::run, &RunOptions::pin_threads));
  s.push_back(makeField("run", "huge_pages", &J::run, &RunOptions::huge_pages));
  s.push_back(makeField("run", "crash_at_step", &J::run, &RunOptions::crash_at_step, 0));
  // data
  s.push_back(makeField("data", "corpus", &J::data, &DataOptions::corpus));
  s.push_back(makeField("data", "items", &J::data, &DataOptions::items));
  s.push_back(makeChoice("data", "context", &J::data, &DataOptions::context, {"window", "basket"}));
  s.push_back(makeField("data", "window", &J::data, &DataOptions::window, 1, 10000));
  {
    Field direction = makeChoice("data", "direction", &J::data, &DataOptions::direction, {"both", "forward"});
    // A basket has no order, so "after the center" means nothing there.
    direction.relation = [](const JobConfig& c) -> std::string {
      if (c.data.direction != "both" && c.data.context == "basket") {
        return fmt::format("'{}' needs data.context window (basket items have no order)", c.data.direction);
      }
      return "";
    };
    s.push_back(direction);
  }
  s.push_back(makeField("data", "min_count", &J::data, &DataOptions::min_count, 1));
  s.push_back(makeField("data", "subsample", &J::data, &DataOptions::subsample, 0, 1));
  s.push_back(makeField("data", "negatives", &J::data, &DataOptions::negatives, 0, 1000));
  s.push_back(makeField("data", "ns_exponent", &J::data, &DataOptions::ns_exponent, -2.0, 2.0));
  s.push_back(makeField("data", "batch_size", &J::data, &DataOptions::batch_size, 1, 1 << 26));
  s.push_back(makeField("data", "eval_fraction", &J::data, &DataOptions::eval_fraction, 0, 1));
  s.push_back(makeField("data", "split_seed", &J::data, &DataOptions::split_seed, 0));
  s.push_back(makeField("data", "eval_hide_last", &J::data, &DataOptions::eval_hide_last, 1, 1000000));
  s.push_back(makeField("data", "skip_bad_lines", &J::data, &DataOptions::skip_bad_lines));
  s.push_back(makeField("data", "cache", &J::data, &DataOptions::cache));
  // synthetic
  s.push_back(makeField("synthetic", "items", &J::synthetic, &SyntheticOptions::items, 2, 1e8));
  {
    Field categories = makeField("synthetic", "categories", &J::synthetic, &SyntheticOptions::categories, 1, 1e6);
    // Checked here too, not only when the corpus is generated: `ringtrain config` and a run's start say it.
    // A job with its own corpus generates nothing: its synthetic section is not read.
    categories.relation = [](const JobConfig& c) -> std::string {
      if (c.data.corpus.empty() && c.synthetic.categories > c.synthetic.items) {
        return fmt::format("{} categories for synthetic.items {} (gen-data --items): at most one category per "
                           "item", c.synthetic.categories, c.synthetic.items);
      }
      return "";
    };
    s.push_back(categories);
  }
  // A billion sessions is about 40 GB of text: a typo's extra zeros stop here, not at a full disk.
  s.push_back(makeField("synthetic", "sessions", &J::synthetic, &SyntheticOptions::sessions, 1, 1000000000));
  s.push_back(makeField("synthetic", "session_length", &J::synthetic, &SyntheticOptions::session_length, 2, 10000));
  s.push_back(makeField("synthetic", "alpha", &J::synthetic, &SyntheticOptions::alpha, 0, 1));
  s.push_back(makeField("synthetic", "zipf", &J::synthetic, &SyntheticOptions::zipf, 0, 10));
  // model
  s.push_back(makeField("model", "dim", &J::model, &ModelOptions::dim, 1, 65536));
  s.push_back(makeField("model", "tower_hidden", &J::model, &ModelOptions::tower_hidden, 0, 65536));
  s.push_back(makeField("model", "sparse", &J::model, &ModelOptions::sparse));
  s.push_back(makeField("model", "init_scale", &J::model, &ModelOptions::init_scale, 0));
  // optim
  s.push_back(makeChoice("optim", "name", &J::optim, &OptimOptions::name, {"sgd", "adagrad", "adam"}));
  s.push_back(makeAbove("optim", "lr", &J::optim, &OptimOptions::lr, 0));  // 0 trains nothing, and says nothing
  s.push_back(makeField("optim", "warmup_steps", &J::optim, &OptimOptions::warmup_steps, 0));
  s.push_back(makeChoice("optim", "schedule", &J::optim, &OptimOptions::schedule, {"linear", "constant"}));
  s.push_back(makeField("optim", "min_lr_ratio", &J::optim, &OptimOptions::min_lr_ratio, 0, 1));
  s.push_back(makeBelow("optim", "beta1", &J::optim, &OptimOptions::beta1, 0, 1));
  s.push_back(makeBelow("optim", "beta2", &J::optim, &OptimOptions::beta2, 0, 1));
  s.push_back(makeAbove("optim", "eps", &J::optim, &OptimOptions::eps, 0));
  s.push_back(makeField("optim", "weight_decay", &J::optim, &OptimOptions::weight_decay, 0));
  // ddp
  s.push_back(makeField("ddp", "bucket_cap_mb", &J::ddp, &DdpOptions::bucket_cap_mb, 1e-6));
  s.push_back(makeField("ddp", "first_bucket_mb", &J::ddp, &DdpOptions::first_bucket_mb, 1e-6));
  s.push_back(makeField("ddp", "static_graph", &J::ddp, &DdpOptions::static_graph));
  s.push_back(makeField("ddp", "find_unused_parameters", &J::ddp, &DdpOptions::find_unused_parameters));
  s.push_back(makeField("ddp", "accumulation_steps", &J::ddp, &DdpOptions::accumulation_steps, 1, 1 << 20));
  s.push_back(makeChoice("ddp", "compression", &J::ddp, &DdpOptions::compression, {"none", "fp16", "bf16"}));
  s.push_back(makeChoice("ddp", "sparse_sync", &J::ddp, &DdpOptions::sparse_sync, {"auto", "shared", "allgather", "owner"}));
  s.push_back(makeField("ddp", "overlap_sparse", &J::ddp, &DdpOptions::overlap_sparse));
  s.push_back(makeField("ddp", "replica_check_every", &J::ddp, &DdpOptions::replica_check_every, 0));
  {
    Field balance = makeField("ddp", "balance", &J::ddp, &DdpOptions::balance);
    // The trainer times each rank's forward and backward on the host's clock: on a GPU that times the
    // launches, not the work, which runs later on the device. And the shares follow those timings, so the
    // float sums' order differs from run to run: not what run.deterministic promises.
    balance.relation = [](const JobConfig& c) -> std::string {
      if (c.ddp.balance && c.run.device.rfind("cuda", 0) == 0) {
        return "true needs run.device cpu (GPU work runs after the host launches it: the host's clock cannot "
               "time a rank's share)";
      }
      if (c.ddp.balance && c.run.deterministic) {
        return "true needs run.deterministic false: the ranks' shares follow their measured speed, so two runs "
               "sum the same pairs in another order and differ in float rounding (not bit for bit)";
      }
      return "";
    };
    s.push_back(balance);
  }
  {
    Field steal = makeField("ddp", "steal", &J::ddp, &DdpOptions::steal);
    // Host threads that share memory run the step; what they take is decided by the clock, so the sums'
    // order differs from run to run. One micro-batch a step: the last chunk's backward synchronizes.
    steal.relation = [](const JobConfig& c) -> std::string {
      if (!c.ddp.steal) return "";
      if (c.run.device.rfind("cuda", 0) == 0) return "true needs run.device cpu (one rank per GPU: nothing to take)";
      if (c.run.deterministic) {
        return "true needs run.deterministic false: which rank trains which pairs depends on timing, so two runs "
               "sum the same pairs in another order and differ in float rounding (not bit for bit)";
      }
      if (c.ddp.balance) return "true and ddp.balance true: choose one (stealing already gives fast ranks more)";
      if (c.ddp.accumulation_steps != 1) return "true needs ddp.accumulation_steps 1";
      if (!c.model.sparse) {
        return "true needs model.sparse true (with dense tables every piece's backward builds a whole table's "
               "gradient)";
      }
      return "";
    };
    s.push_back(steal);
  }
  s.push_back(makeField("ddp", "steal_min_pairs", &J::ddp, &DdpOptions::steal_min_pairs, 1, int64_t{1} << 40));
  // comm
  s.push_back(makeChoice("comm", "backend", &J::comm, &CommOptions::backend, {"auto", "gloo", "mpi", "nccl"}));
  s.push_back(makeChoice("comm", "allreduce_algorithm", &J::comm, &CommOptions::allreduce_algorithm,
                         {"ring", "native"}));
  // A year at most: waits become nanosecond deadlines, which overflow near 9e9 s.
  s.push_back(makeField("comm", "timeout_s", &J::comm, &CommOptions::timeout_s, 1e-3, 365.0 * 24 * 3600));
  s.push_back(makeField("comm", "ring_segment_kb", &J::comm, &CommOptions::ring_segment_kb, 1, 1 << 20));
  s.push_back(makeField("comm", "ring_inflight", &J::comm, &CommOptions::ring_inflight, 1, 64));
  s.push_back(makeField("comm", "ring_direct_kb", &J::comm, &CommOptions::ring_direct_kb, 0, 1 << 20));
  s.push_back(makeField("comm", "same_host_copy", &J::comm, &CommOptions::same_host_copy));
  s.push_back(makeField("comm", "check_collectives", &J::comm, &CommOptions::check_collectives));
  s.push_back(makeField("comm", "spin_us", &J::comm, &CommOptions::spin_us, -1, 1000000));
  s.push_back(makeField("comm", "master_addr", &J::comm, &CommOptions::master_addr));
  s.push_back(makeField("comm", "master_port", &J::comm, &CommOptions::master_port, 1, 65535));
  // loader
  s.push_back(makeField("loader", "workers", &J::loader, &LoaderOptions::workers, 0, 256));
  s.push_back(makeField("loader", "queue_depth", &J::loader, &LoaderOptions::queue_depth, 1, 1 << 16));
  s.push_back(makeChoice("loader", "pin_memory", &J::loader, &LoaderOptions::pin_memory, {"auto", "on", "off"}));
  // checkpoint
  s.push_back(makeField("checkpoint", "dir", &J::checkpoint, &CheckpointOptions::dir));
  s.push_back(makeField("checkpoint", "every_steps", &J::checkpoint, &CheckpointOptions::every_steps, 0));
  s.push_back(makeField("checkpoint", "keep", &J::checkpoint, &CheckpointOptions::keep, 1, 1000));
  s.push_back(makeField("checkpoint", "resume", &J::checkpoint, &CheckpointOptions::resume));
  // eval
  s.push_back(makeField("eval", "every_steps", &J::eval, &EvalOptions::every_steps, 0));
  s.push_back(makeField("eval", "k", &J::eval, &EvalOptions::k, 1, 100000));
  s.push_back(makeField("eval", "max_queries", &J::eval, &EvalOptions::max_queries, 0));
  s.push_back(makeField("eval", "neighbor_sample", &J::eval, &EvalOptions::neighbor_sample, 0));
  s.push_back(makeChoice("eval", "score", &J::eval, &EvalOptions::score, {"cosine", "in_out"}));
  {
    // "The newest items" of a basket are only where the line lists them: a basket has no order.
    Field recent_items = makeField("eval", "recent_items", &J::eval, &EvalOptions::recent_items, 0);
    recent_items.relation = [](const JobConfig& c) -> std::string {
      if (c.eval.recent_items > 0 && c.data.context == "basket") {
        return fmt::format("{} needs data.context window (basket items have no order)", c.eval.recent_items);
      }
      return "";
    };
    s.push_back(recent_items);
    Field recent_decay = makeField("eval", "recent_decay", &J::eval, &EvalOptions::recent_decay, 0, 1);
    recent_decay.relation = [](const JobConfig& c) -> std::string {
      if (c.eval.recent_decay < 1 && c.data.context == "basket") {
        return fmt::format("{} needs data.context window (basket items have no order)", c.eval.recent_decay);
      }
      return "";
    };
    s.push_back(recent_decay);
  }
  // log
  s.push_back(makeChoice("log", "level", &J::log, &LogOptions::level,
                         {"trace", "debug", "info", "warn", "error", "off"}));
  s.push_back(makeField("log", "every_steps", &J::log, &LogOptions::every_steps, 1));
  s.push_back(makeField("log", "metrics_file", &J::log, &LogOptions::metrics_file));
  s.push_back(makeField("log", "trace_steps", &J::log, &LogOptions::trace_steps, 0));
  s.push_back(makeField("log", "plot", &J::log, &LogOptions::plot));
  // serve
  // Empty would resolve to the wildcard address: every interface, where the default is loopback only.
  s.push_back(makeNonEmpty("serve", "host", &J::serve, &ServeOptions::host,
                           "an address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for every interface"));
  s.push_back(makeField("serve", "port", &J::serve, &ServeOptions::port, 0, 65535));
  s.push_back(makeField("serve", "threads", &J::serve, &ServeOptions::threads, 1, 256));
  s.push_back(makeField("serve", "score_threads", &J::serve, &ServeOptions::score_threads, 1, 256));
  s.push_back(makeField("serve", "max_batch", &J::serve, &ServeOptions::max_batch, 1, 1 << 16));
  s.push_back(makeField("serve", "max_wait_us", &J::serve, &ServeOptions::max_wait_us, 0, 1e7));
  s.push_back(makeField("serve", "queue_capacity", &J::serve, &ServeOptions::queue_capacity, 1, 1 << 24));
  s.push_back(makeField("serve", "cache_entries", &J::serve, &ServeOptions::cache_entries, 0));
  s.push_back(makeField("serve", "cache_mb", &J::serve, &ServeOptions::cache_mb, 0, 1 << 30));
  s.push_back(makeChoice("serve", "index", &J::serve, &ServeOptions::index, {"exact", "faiss"}));
  s.push_back(makeField("serve", "watch_dir", &J::serve, &ServeOptions::watch_dir));
  s.push_back(makeField("serve", "watch_interval_ms", &J::serve, &ServeOptions::watch_interval_ms, 10, 3600000));
  s.push_back(makeField("serve", "admin_token", &J::serve, &ServeOptions::admin_token));
  s.push_back(makeField("serve", "max_body_bytes", &J::serve, &ServeOptions::max_body_bytes, 1));
  return s;
}

size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

const std::vector<Field>& schema() {
  static const std::vector<Field> kSchema = buildSchema();
  return kSchema;
}

const Field* findField(const std::string& section, const std::string& key) {
  for (const Field& f : schema()) {
    if (f.section == section && f.key == key) return &f;
  }
  return nullptr;
}

std::vector<std::string> sections() {
  std::vector<std::string> out;
  for (const Field& f : schema()) {
    if (out.empty() || out.back() != f.section) out.push_back(f.section);
  }
  return out;
}

bool isSection(const std::string& section) {
  const auto all = sections();
  return std::find(all.begin(), all.end(), section) != all.end();
}

std::string closestMatch(const std::string& word, const std::vector<std::string>& candidates) {
  // In order: a key the word begins ("optim.war" for warmup_steps), the nearest if several; else a plausible
  // typo, at most a third of the word changed; else a key the word runs past ("optimizer" for optim).
  std::string shortened, typo, lengthened;
  size_t shortened_d = std::numeric_limits<size_t>::max(), typo_d = shortened_d, lengthened_d = shortened_d;
  for (const std::string& c : candidates) {
    const size_t d = editDistance(word, c);
    const bool long_enough = word.size() >= 3 && c.size() >= 3;
    if (long_enough && c.size() > word.size() && c.rfind(word, 0) == 0 && d < shortened_d) shortened_d = d, shortened = c;
    if (long_enough && word.size() > c.size() && word.rfind(c, 0) == 0 && d < lengthened_d) lengthened_d = d, lengthened = c;
    if (d < typo_d) typo_d = d, typo = c;
  }
  if (!shortened.empty()) return shortened;
  if (!typo.empty() && typo_d <= std::max<size_t>(2, word.size() / 3)) return typo;
  return lengthened;
}

}  // namespace ringtrain::config
