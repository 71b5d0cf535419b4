// One YAML file describes a job. It is parsed once, at start, into these plain structs (a section per
// concern, mirroring the YAML one to one) and passed down; nothing below reads the environment or the file.
// configs/default.yaml documents every key with its default; the defaults here are the same values
// (a test keeps the two in step).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ringtrain::config {

struct RunOptions {
  std::string name = "ringtrain";
  int64_t seed = 42;
  std::string device = "cpu";  // cpu | cuda
  int threads = 1;             // intra-op threads per rank
  int epochs = 1;
  int64_t max_steps = 0;  // > 0: stop after this many optimizer steps, whatever the epoch count
  std::string output_dir = "runs/ringtrain";
  bool deterministic = true;  // refuse what is not bit for bit on CPU (ddp.balance); outside the identity
  bool pin_threads = false;   // training thread alone on one of a bound rank's CPUs (src/train/thread_pinning.h)
  bool huge_pages = true;     // CPU embedding tables on transparent huge pages (src/model/table_memory.h)
  int64_t crash_at_step = 0;  // > 0: exit abruptly after this step (fault injection for restart tests)
};

struct DataOptions {
  std::string corpus;  // one session/basket per line; empty: generate the synthetic corpus
  std::string items;   // items.tsv beside the corpus; empty: <corpus dir>/items.tsv when it exists
  std::string context = "window";  // window | basket
  int window = 5;
  std::string direction = "both";  // both | forward: window contexts on both sides, or only after the center
  int min_count = 1;
  double subsample = 1e-3;  // frequent-item subsampling threshold; 0 turns it off
  int negatives = 5;
  double ns_exponent = 0.75;  // negatives drawn from unigram^ns_exponent (items seen in training only)
  int batch_size = 1024;  // positive pairs per rank per step
  double eval_fraction = 0.2;
  int64_t split_seed = 42;
  int eval_hide_last = 1;  // window protocol: items hidden at the end of each held-out session
  bool skip_bad_lines = false;
  bool cache = true;
};

struct SyntheticOptions {
  int64_t items = 20000;
  int categories = 20;
  int64_t sessions = 40000;
  int session_length = 8;
  double alpha = 0.7;  // probability that the next item stays in the session's home category
  double zipf = 1.0;
};

struct ModelOptions {
  int dim = 64;
  int tower_hidden = 0;  // > 0: an MLP tower dim -> tower_hidden -> ReLU -> dim on the input side
  bool sparse = true;    // sparse gradients for the embedding tables
  double init_scale = 0.0;  // uniform(-s, s) for input vectors; 0: 0.5 / dim
};

struct OptimOptions {
  std::string name = "adagrad";  // sgd | adagrad | adam
  double lr = 0.2;
  int64_t warmup_steps = 0;
  std::string schedule = "linear";  // linear (decay to min_lr_ratio * lr at the last step) | constant
  double min_lr_ratio = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

struct DdpOptions {
  double bucket_cap_mb = 25.0;
  double first_bucket_mb = 1.0;
  bool static_graph = false;
  bool find_unused_parameters = true;
  int accumulation_steps = 1;
  std::string compression = "none";  // none | fp16 | bf16 (dense buckets)
  // auto (shared where every rank is on one host with host tables, else allgather) | shared (one table per
  // host, each rank updates the rows it owns) | allgather | owner (rows reduced by their owner rank)
  std::string sparse_sync = "auto";
  // owner and shared sync: a helper thread sums a table's rows for its owners as soon as its gradient is
  // ready, while the rest of backward runs
  bool overlap_sparse = true;
  int64_t replica_check_every = 0;   // 0: off
  // The trainer moves pairs of each step from ranks that run slower per pair to faster ones (see
  // src/train/work_balance.h); the same gradient, summed in another order, so runs are not bit-for-bit
  // reproducible with it
  bool balance = false;
  // Ranks that are done with their own batch take pairs of the batches others have not reached, while the
  // step runs (see src/train/work_stealing.h); like balance, the same gradient summed in another order
  bool steal = false;
  int64_t steal_min_pairs = 256;  // the smallest piece a rank takes; its own batch it takes as B - 2 * this, this, this
};

struct CommOptions {
  std::string backend = "auto";              // auto | gloo | mpi | nccl
  std::string allreduce_algorithm = "ring";  // ring | native
  double timeout_s = 300.0;
  int ring_segment_kb = 4096;
  int ring_inflight = 4;
  int ring_direct_kb = 16;  // buffers up to this size skip the ring (see RingOptions::direct_max_bytes)
  bool same_host_copy = true;     // ring: copy segments straight from a peer's memory when all share a host
  bool check_collectives = true;  // sequence/op/size/dtype agreement across ranks
  // Microseconds a waiting communicator thread polls before it sleeps; -1: auto (long where the ranks copy
  // between each other on one host and each has two CPUs, else 50). Gloo and MPI; see src/comm/spin_wait.h.
  int spin_us = -1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

struct LoaderOptions {
  int workers = 2;
  int queue_depth = 8;
  std::string pin_memory = "auto";  // auto (on with cuda) | on | off
};

struct CheckpointOptions {
  std::string dir;  // empty: <run.output_dir>/checkpoints
  int64_t every_steps = 0;
  int keep = 2;
  bool resume = false;
};

struct EvalOptions {
  int64_t every_steps = 0;  // 0: only at the end
  int k = 10;
  int64_t max_queries = 0;  // 0: all held-out queries
  int64_t neighbor_sample = 2000;
  std::string score = "cosine";  // cosine: cos(in, in) | in_out: <in, out> (see train/evaluation.h)
  int64_t recent_items = 0;      // > 0: score with only the last N query items (all stay excluded)
  double recent_decay = 1.0;     // scored query items weigh 1 (the newest), recent_decay, recent_decay^2, ...
};

struct LogOptions {
  std::string level = "info";  // trace | debug | info | warn | error | off
  int64_t every_steps = 50;
  std::string metrics_file;  // empty: <run.output_dir>/metrics.jsonl
  int64_t trace_steps = 0;   // > 0: write a Chrome trace of this many steps
  bool plot = true;
};

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  int threads = 2;        // HTTP I/O threads, each an event loop over any number of connections
  int score_threads = 2;  // scoring workers, each scoring its own batch
  int max_batch = 64;
  int64_t max_wait_us = 1000;
  int queue_capacity = 1024;
  int64_t cache_entries = 10000;
  int64_t cache_mb = 256;  // the cache's keys and answers, in MiB
  std::string index = "exact";  // exact | faiss
  std::string watch_dir;
  int64_t watch_interval_ms = 1000;
  std::string admin_token;
  int64_t max_body_bytes = 1 << 20;
};

struct JobConfig {
  RunOptions run;
  DataOptions data;
  SyntheticOptions synthetic;
  ModelOptions model;
  OptimOptions optim;
  DdpOptions ddp;
  CommOptions comm;
  LoaderOptions loader;
  CheckpointOptions checkpoint;
  EvalOptions eval;
  LogOptions log;
  ServeOptions serve;
};

// "section.key=value" from the command line.
struct Override {
  std::string key;
  std::string value;
  std::string origin = "--set";  // what messages blame: the option that gave it (gen-data's --items, ...)
};
// Parses "--set" text; throws ConfigError naming the bad text.
Override parseOverride(const std::string& text);

// Loads a YAML file (missing keys keep their defaults), then applies overrides in order, then validates.
// An override wins over the file, and a later override of a key over an earlier one.
// Every problem throws ConfigError with one line naming the file, the line and the key path.
JobConfig loadFile(const std::string& path, const std::vector<Override>& overrides = {});
// Same, from text; `origin` names the source in messages.
JobConfig loadString(const std::string& yaml, const std::string& origin,
                     const std::vector<Override>& overrides = {});
// Defaults plus overrides.
JobConfig fromOverrides(const std::vector<Override>& overrides);
// A configuration this or another ringtrain version wrote (a checkpoint's toYaml()). Keys it lacks (added
// since) keep their defaults, so a new key's default must be the behaviour before it existed. What this
// version cannot take is skipped and listed in `ignored` as "section.key: value": keys it does not know
// (removed since), and values it refuses for keys outside the job's identity (those keep their defaults).
// A value refused for a key of the identity throws ConfigError, as loadString does.
JobConfig loadStored(const std::string& yaml, const std::string& origin, std::vector<std::string>* ignored);

// Sets one key from its text form ("data.window", "7"); throws ConfigError, its message starting with
// `origin`.
void setValue(JobConfig& config, const std::string& key, const std::string& value,
              const std::string& origin = "--set");
// Checks ranges and choices of every key; throws ConfigError for the first bad one.
void validate(const JobConfig& config);

// Every key in schema order with its canonical value text.
std::vector<std::pair<std::string, std::string>> flatten(const JobConfig& config);
// Canonical YAML: every section and key in schema order, one spelling per value.
std::string toYaml(const JobConfig& config);
// The job's identity, which checkpoints carry: 16 hex digits of a 64-bit FNV-1a hash of toYaml(), equal
// configs hashing equal on every rank. Keys that say how to run rather than what training computes are left
// out (where outputs and checkpoints go and how often, the loader's workers and queue, ddp.sparse_sync and
// overlap_sparse, comm timeouts and addresses, run.crash_at_step, and the eval, log and serve sections), so
// a run resumes its checkpoints under other such settings, or from a directory moved elsewhere. The hash moves whenever a
// version adds a key: a checkpoint whose hash differs is compared key by key (identityDifferences).
std::string hash(const JobConfig& config);
// The same over every key: what the ranks of one job must agree on.
std::string fullHash(const JobConfig& config);
// Keys whose values differ, in schema order.
std::vector<std::string> differingKeys(const JobConfig& a, const JobConfig& b);
// One key of a job's identity (what hash() covers) that differs between two configs, with both values as
// toYaml() writes them (strings quoted).
struct IdentityDifference {
  std::string key;
  std::string first;   // its value in the first config
  std::string second;  // in the second
};
// The keys hash() covers whose values differ, in schema order: empty exactly when the two configs are the same
// job. Two configs that differ only in keys hash() leaves out are the same job.
std::vector<IdentityDifference> identityDifferences(const JobConfig& first, const JobConfig& second);
// All valid "section.key" names.
std::vector<std::string> allKeys();

}  // namespace ringtrain::config
