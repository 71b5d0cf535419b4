#include "ringtrain/train/trainer.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>

#include "core/directory_lock.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/comm/job_group.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/file_target.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/core/hash.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/batch_loader.h"
#include "ringtrain/data/corpus.h"
#include "ringtrain/data/pair_generator.h"
#include "ringtrain/data/split.h"
#include "ringtrain/ddp/distributed_data_parallel.h"
#include "ringtrain/ddp/tensor_buffer.h"
#include "ringtrain/model/sgns_model.h"
#include "ringtrain/model/word2vec_io.h"
#include "ringtrain/train/checkpoint.h"
#include "ringtrain/train/item_export.h"
#include "ringtrain/train/optimizer.h"
#include "ringtrain/train/startup_check.h"
#include "train/checkpoint_request.h"
#include "train/run_log.h"
#include "train/thread_pinning.h"
#include "train/torch_failure.h"
#include "train/work_balance.h"
#include "train/work_stealing.h"

namespace ringtrain::train {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kBalanceCutsBlob[] = "ddp.balance_cuts";  // WorkBalance::encodeCuts() after the step, when on
constexpr char kCorpusBlob[] = "data.corpus";  // corpusFingerprint() of the corpus a checkpoint was trained on
// How the checkpoint's build paired a basket: kBasketsAsSets, or absent for builds that paired an item
// listed twice in a basket with itself and counted each listing.
constexpr char kBasketPairingBlob[] = "data.basket_pairing";
constexpr char kBasketsAsSets[] = "sets";

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double millis(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Whether two paths name one file ("data/x.txt" and "./data/x.txt"), as far as the names tell: resolved
// where they exist, compared as written where they do not.
bool samePath(const std::string& a, const std::string& b) {
  std::error_code ec_a, ec_b;
  const auto ra = std::filesystem::weakly_canonical(a, ec_a), rb = std::filesystem::weakly_canonical(b, ec_b);
  return ec_a || ec_b ? a == b : ra == rb;
}

std::string outputPath(const config::JobConfig& job, const std::string& name) {
  return (std::filesystem::path(job.run.output_dir) / name).string();
}

at::Device chooseDevice(const config::JobConfig& job, const dist::ProcessInfo& process) {
  if (job.run.device == "cpu") return at::Device(at::kCPU);
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (count == 0) {
    RT_THROW(ConfigError, "run.device is cuda but no CUDA device is visible to rank ", process.rank,
             " (a CPU-only LibTorch, or CUDA_VISIBLE_DEVICES hides them); use --set run.device=cpu");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(process.local_rank % count));
}

// "N lines, M items, item list <hash>, lines <hash>": what ranks compare before the first step, and what a
// checkpoint records of its corpus (the lines' hash covers every line's items in order: a corpus edited in
// place with the same items, or lines shuffled, moves the held-out split and the batches).
std::string corpusFingerprint(const data::Corpus& corpus) {
  uint64_t items = kFnv1aOffsetBasis;
  for (int32_t i = 0; i < corpus.vocab().size(); ++i) {
    const std::string_view token = corpus.vocab().token(i);
    items = fnv1a64(token.data(), token.size(), items);
    items = fnv1a64("\n", 1, items);
  }
  const std::vector<int32_t>& tokens = corpus.tokens();
  const std::vector<int64_t>& offsets = corpus.offsets();
  uint64_t lines = fnv1aWords64(tokens.data(), tokens.size() * sizeof(int32_t));
  lines = fnv1aWords64(offsets.data(), offsets.size() * sizeof(int64_t), lines);
  return fmt::format("{} lines, {} items, item list {:016x}, lines {:016x}", corpus.numLines(), corpus.vocab().size(),
                     items, lines);
}

// The pieces of one training process that outlive a phase: the job's store and communicator, the data,
// the model. Built in the order of the job's data flow.
struct Session {
  const config::JobConfig& job;
  const dist::ProcessInfo& process;
  at::Device device{at::kCPU};
  std::unique_ptr<comm::JobGroup> group;  // the job's store and communicator
  comm::Communicator* comm = nullptr;      // group's, while group lives
  std::shared_ptr<const data::Corpus> corpus;
  std::shared_ptr<const data::CorpusSplit> split;
  std::vector<int64_t> train_counts;  // per item, over the training tokens (loadData)
  std::vector<int32_t> untrained;     // the items whose count is 0 (loadData): left out of exports
  std::string corpus_fingerprint;     // corpusFingerprint() (loadData)
  std::shared_ptr<model::SgnsModel> model;

  Session(const config::JobConfig& j, const dist::ProcessInfo& p) : job(j), process(p) {}

  bool leader() const { return process.rank == 0; }

  void connect() {
    device = chooseDevice(job, process);
    comm::Device comm_device;
    if (device.is_cuda()) comm_device.cuda_index = device.index();
    group = std::make_unique<comm::JobGroup>(job.comm, process, comm_device);
    comm = &group->comm();
  }

  void loadData() {
    // Rank 0 generates the synthetic corpus (when data.corpus is empty) and writes the binary cache first;
    // the others then read what it wrote instead of all writing the same files at once.
    if (leader()) corpus = data::loadJobCorpus(job);
    comm->barrier();
    if (!leader()) corpus = data::loadJobCorpus(job);
    split = std::make_shared<const data::CorpusSplit>(*corpus, job.data);
    train_counts = data::trainCounts(*corpus, *split, data::lineCountingOf(data::PairOptions::from(job).mode));
    untrained = untrainedItems(train_counts);
    corpus_fingerprint = corpusFingerprint(*corpus);
  }

  void buildModel() {
    model::SgnsOptions options = model::sgnsOptionsFromConfig(job.model, corpus->vocab().size());
    options.huge_pages = job.run.huge_pages && device.is_cpu();
    model = std::make_shared<model::SgnsModel>(options, static_cast<uint64_t>(job.run.seed));
    model->to(device);
  }

  std::vector<std::string> vocabTokens() const {
    std::vector<std::string> tokens;
    tokens.reserve(static_cast<size_t>(corpus->vocab().size()));
    for (int64_t i = 0; i < corpus->vocab().size(); ++i) tokens.emplace_back(corpus->vocab().token(static_cast<int32_t>(i)));
    return tokens;
  }

  // Sums `values` over ranks (float64 allreduce) in place, through a tensor on the job's device (NCCL
  // reduces device memory only).
  void sumOverRanks(std::vector<double>& values) {
    at::Tensor sums = at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(device);
    comm->allreduce(ddp::asBuffer(sums), comm::ReduceOp::kSum);
    sums = sums.to(at::kCPU);
    for (size_t i = 0; i < values.size(); ++i) values[i] = sums[static_cast<int64_t>(i)].item<double>();
  }
};

// `ringtrain eval` on a checkpoint: the held-out split is rebuilt from the job's settings, so settings that
// shape it (or, for a generated corpus, the corpus) must be the checkpoint's. Another split would count lines
// the model trained on as held out (inflated figures) or rank as untrained items it learnt (deflated ones).
// The corpus path may differ (restoreModel then checks the items); eval.* and the rest of the identity do
// not shape the split.
void refuseAnotherSplit(const Checkpoint& ckpt, const config::JobConfig& job, const std::string& path) {
  std::vector<std::string> ignored;
  config::JobConfig stored;
  try {
    stored = config::loadStored(ckpt.config_yaml, path + " (stored configuration)", &ignored);
  } catch (const ConfigError& e) {
    RT_THROW(DataError, "checkpoint ", path, ": its stored configuration does not load in this version, so its "
             "held-out split is unknown: ", e.what());
  }
  const bool generated = stored.data.corpus.empty();  // then the corpus is made from synthetic.* and run.seed
  std::string list, sets;
  std::optional<config::IdentityDifference> corpus;  // data.corpus, as printed, where it differs
  for (const config::IdentityDifference& d : config::identityDifferences(stored, job)) {
    if (d.key == "data.corpus") corpus = d;
    const bool shapes_split = d.key == "data.context" || d.key == "data.min_count" || d.key == "data.skip_bad_lines" ||
                              d.key == "data.eval_fraction" || d.key == "data.split_seed" ||
                              (d.key == "data.eval_hide_last" && stored.data.context == "window" &&
                               job.data.context == "window") ||  // the basket protocol hides one random item
                              (generated && (d.key.rfind("synthetic.", 0) == 0 || d.key == "run.seed"));
    if (!shapes_split) continue;
    list += (list.empty() ? "" : "; ") + d.key + " is " + d.first + " there and " + d.second + " here";
    sets += " --set " + d.key + "=" + d.first;
  }
  // A checkpoint of a generated corpus refused under a job with a corpus file: the settings that make its
  // corpus again start with an empty data.corpus. (The path alone is no part of the split: the generated
  // file named by its path is the same corpus.)
  if (!list.empty() && generated && !job.data.corpus.empty()) {
    list = "data.corpus is \"\" (generated) there and " + job.data.corpus + " here; " + list;
    sets = " --set data.corpus=" + sets;
  } else if (!list.empty() && !generated && corpus && !samePath(stored.data.corpus, job.data.corpus)) {
    // Another path may be the same file moved (restoreModel then compares the items), or another corpus,
    // which the split's settings alone would not say.
    list = "data.corpus is " + corpus->first + " there and " + corpus->second + " here; " + list;
    sets = " --set data.corpus=" + corpus->first + sets;
  }
  if (!list.empty()) {
    RT_THROW(DataError, "checkpoint ", path, " was trained on another corpus or held-out split (", list,
             "): its figures would count lines it trained on, or items it learnt as unseen; evaluate with the "
             "checkpoint's settings:", sets);
  }
}

// A loss that did not move over a whole run means nothing was learnt, yet the run "succeeds": say so. With
// mean-reduced sparse gradients each row gets ~1/batch of a pair's gradient, so SGD at a small lr (the old
// default, 0.05) leaves the output vectors at their zeros and the loss at 6 ln 2 for 5 negatives.
void warnIfNothingLearnt(const config::JobConfig& job, const std::optional<std::pair<int64_t, double>>& first,
                         int64_t last_step, double last_loss) {
  constexpr int64_t kMinSteps = 100;
  if (!first || last_step - first->first < kMinSteps) return;
  if (std::fabs(last_loss - first->second) > 1e-3 * std::fabs(first->second)) return;
  warn("the loss stayed at {:.4f} from step {} to step {}: nothing was learnt. optim.lr {:g} is likely far too "
       "small for optim.name {} (sparse rows average their gradient over the batch: SGD wants a much larger lr; "
       "adagrad at 0.2 learns on every job in configs/)",
       last_loss, first->first, last_step, job.optim.lr, job.optim.name);
}

std::vector<EvalQuery> toEvalQueries(const std::vector<data::EvalQuery>& queries) {
  std::vector<EvalQuery> out;
  out.reserve(queries.size());
  for (const auto& q : queries) out.push_back(EvalQuery{q.query, q.target});
  return out;
}

struct Evaluation {
  RankingSums ranking;
  RankingSums popularity;
  CategorySums categories;
  int64_t held_out_lines = 0;
  int64_t items = 0;
};

// Collective: every rank scores its share of the held-out queries and sampled items; sums are reduced.
Evaluation evaluate(Session& s, const std::vector<EvalQuery>& queries, bool with_popularity) {
  const std::vector<int64_t>& counts = s.train_counts;
  const config::EvalOptions& e = s.job.eval;
  const int rank = s.comm->rank();
  const int world = s.comm->size();
  Evaluation result;
  result.held_out_lines = static_cast<int64_t>(s.split->heldOutLines().size());
  result.items = s.corpus->vocab().size();
  at::Tensor vectors = itemVectors(*s.model);
  RankingOptions ranking;
  ranking.k = e.k;
  ranking.max_queries = e.max_queries;
  ranking.recent_items = e.recent_items;
  ranking.recent_decay = e.recent_decay;
  ranking.cosine = e.score == "cosine";
  ranking.train_counts = &counts;
  const at::Tensor candidates = ranking.cosine ? vectors : s.model->outputVectors();
  result.ranking = evaluateRanking(vectors, candidates, queries, ranking, rank, world);
  if (with_popularity) result.popularity = evaluatePopularity(counts, queries, e.k, rank, world, e.max_queries);
  const data::ItemTable& items = s.corpus->items();
  const bool has_categories = items.numCategories() > 0;
  if (has_categories && e.neighbor_sample > 0) {
    std::vector<int32_t> category(static_cast<size_t>(s.corpus->vocab().size()));
    for (size_t i = 0; i < category.size(); ++i) category[i] = items.categoryId(static_cast<int32_t>(i));
    result.categories = categoryAgreement(vectors, category, e.neighbor_sample, e.k,
                                          static_cast<uint64_t>(s.job.run.seed), rank, world);
  }
  std::vector<double> sums = {result.ranking.hits,
                              result.ranking.ndcg_sum,
                              static_cast<double>(result.ranking.count),
                              result.popularity.hits,
                              result.popularity.ndcg_sum,
                              static_cast<double>(result.popularity.count),
                              static_cast<double>(result.categories.neighbor_same),
                              static_cast<double>(result.categories.neighbor_total),
                              static_cast<double>(result.categories.random_same),
                              static_cast<double>(result.categories.random_total)};
  s.sumOverRanks(sums);
  result.ranking = RankingSums{sums[0], sums[1], static_cast<int64_t>(sums[2])};
  result.popularity = RankingSums{sums[3], sums[4], static_cast<int64_t>(sums[5])};
  result.categories = CategorySums{static_cast<int64_t>(sums[6]), static_cast<int64_t>(sums[7]),
                                   static_cast<int64_t>(sums[8]), static_cast<int64_t>(sums[9])};
  return result;
}

void putEvaluation(const Evaluation& ev, TrainSummary& summary) {
  summary.ranking = ev.ranking;
  summary.popularity = ev.popularity;
  summary.categories = ev.categories;
  summary.held_out_lines = ev.held_out_lines;
  summary.items = ev.items;
}

std::string describe(const Evaluation& ev, int k, bool with_popularity) {
  std::string text;
  const std::string caveat = rankingCaveat(ev.ranking, ev.held_out_lines, ev.items, k);
  if (ev.ranking.count == 0) {
    text = fmt::format("eval: HR@{} not measured ({})", k, caveat);
  } else {
    text = fmt::format("eval: HR@{} {:.4f} NDCG@{} {:.4f} over {} held-out quer{}", k, ev.ranking.hitRate(), k,
                       ev.ranking.ndcg(), ev.ranking.count, ev.ranking.count == 1 ? "y" : "ies");
    if (with_popularity) text += fmt::format(" (popularity baseline HR@{} {:.4f})", k, ev.popularity.hitRate());
    if (!caveat.empty()) text += " (" + caveat + ")";
  }
  if (ev.categories.neighbor_total > 0) {
    text += fmt::format("; category agreement of {}-NN {:.3f} (random pairs {:.3f})", k,
                        ev.categories.neighborShare(), ev.categories.randomShare());
  }
  return text;
}

}  // namespace

std::string rankingCaveat(const RankingSums& ranking, int64_t held_out_lines, int64_t items, int k) {
  if (ranking.count == 0) {
    if (held_out_lines == 0) return "no line is held out: see data.eval_fraction";
    return fmt::format("none of the {} held-out line{} gives a query: each hidden item is already among the "
                       "items it would be queried with, or nothing is left to query with",
                       held_out_lines, held_out_lines == 1 ? "" : "s");
  }
  if (items > 0 && k >= items - 1) {  // a query holds at least one item, which is not a candidate
    return fmt::format("k = {} is at least the {} candidates of a query ({} items less its own): every target "
                       "is a hit", k, items - 1, items);
  }
  return "";
}

namespace {

std::string encodePosition(const data::LoaderPosition& p) { return fmt::format("{} {}", p.epoch, p.step); }

data::LoaderPosition decodePosition(const std::string& text, const std::string& path) {
  data::LoaderPosition p;
  std::istringstream in(text);
  if (!(in >> p.epoch >> p.step) || p.epoch < 0 || p.step < 0) {
    RT_THROW(DataError, path, ": checkpoint has a malformed data position '", text, "'");
  }
  return p;
}

Checkpoint makeCheckpoint(Session& s, const Optimizer& optimizer, int64_t global_step,
                          const data::LoaderPosition& position, const WorkBalance& balance) {
  Checkpoint ckpt;
  ckpt.global_step = global_step;
  ckpt.epoch = position.epoch;
  ckpt.world_size = s.comm->size();
  ckpt.config_hash = config::hash(s.job);
  ckpt.config_yaml = config::toYaml(s.job);
  ckpt.model_layout = s.model->layoutDescription();
  ckpt.vocab = s.vocabTokens();
  for (const auto& p : s.model->named_parameters()) ckpt.model[p.key()] = p.value().detach().to(at::kCPU).clone();
  ckpt.optimizer = optimizer.stateDict();
  ckpt.blobs["data.position"] = encodePosition(position);
  ckpt.blobs[kUntrainedItemsBlob] = encodeItemIds(s.untrained);
  ckpt.blobs[kCorpusBlob] = s.corpus_fingerprint;
  ckpt.blobs[kBasketPairingBlob] = kBasketsAsSets;
  if (balance.enabled()) ckpt.blobs[kBalanceCutsBlob] = balance.encodeCuts();
  ckpt.torch_rng_state = captureTorchRngState();
  return ckpt;
}

// A checkpoint from a build that paired a basket's repeated item with itself, resumed in basket mode on a
// corpus with such a basket: the rest of the run cannot replay the stream it started (other pairs, other
// counts behind subsampling and negatives), which resuming otherwise does bit for bit. It goes on, said.
void warnOfAnotherBasketPairing(const Session& s, const Checkpoint& ckpt, const std::string& where) {
  if (data::PairOptions::from(s.job).mode != data::ContextMode::kBasket) return;
  if (const auto it = ckpt.blobs.find(kBasketPairingBlob); it != ckpt.blobs.end() && it->second == kBasketsAsSets) {
    return;
  }
  if (!data::aTrainLineRepeatsAnItem(*s.corpus, *s.split)) return;
  warn("{}: written by an older ringtrain, which paired an item listed twice in a basket with itself; this one "
       "takes a basket as a set, so the resumed run trains on other pairs than an uninterrupted run of that "
       "version would have", where);
}

// Why a checkpoint's items or lines are not the job's corpus: another file, where the job reads another path
// than the one it was trained on (the configuration stored in it says which), else the file changed.
std::string whyAnotherCorpus(const Checkpoint& ckpt, const config::JobConfig& job) {
  if (ckpt.config_yaml.empty()) return "the corpus has changed since the checkpoint was written";  // too old to say
  try {
    std::vector<std::string> ignored;
    const config::JobConfig stored = config::loadStored(ckpt.config_yaml, "stored configuration", &ignored);
    const std::string trained_on = data::jobCorpusPath(stored), reads = data::jobCorpusPath(job);
    if (!samePath(trained_on, reads)) {
      return "the checkpoint was trained on " + trained_on + " and this job reads " + reads;
    }
  } catch (const std::exception&) {  // an older or damaged stored configuration: the corpus is all there is
  }
  return "the corpus has changed since the checkpoint was written";
}

void restoreModel(Session& s, const Checkpoint& ckpt, const std::string& where) {
  // Row i of a table is the vector of item i: a corpus changed since the checkpoint (same path, new
  // content) can keep the item count and still move every item to another row. Checked before the layout,
  // which a changed item count changes too: the items say why ("vocab=500" against "vocab=502" did not).
  const std::vector<std::string> tokens = s.vocabTokens();
  if (ckpt.vocab != tokens) {
    size_t i = 0;
    while (i < ckpt.vocab.size() && i < tokens.size() && ckpt.vocab[i] == tokens[i]) ++i;
    const auto item = [](const std::vector<std::string>& v, size_t k) {
      return k < v.size() ? "'" + v[k] + "'" : std::string("none");
    };
    RT_THROW(DataError, where, ": the checkpoint's items are not this job's: item ", i, " is ", item(ckpt.vocab, i),
             " there and ", item(tokens, i), " here (", ckpt.vocab.size(), " items there, ", tokens.size(),
             " here); ", whyAnotherCorpus(ckpt, s.job));
  }
  if (ckpt.model_layout != s.model->layoutDescription()) {
    RT_THROW(DataError, where, ": checkpoint model '", ckpt.model_layout, "' does not match this job's '",
             s.model->layoutDescription(), "'");
  }
  // The same items in the same order, yet other lines (edited in place, lines added or shuffled): another
  // held-out split, other batches. Checkpoints older than this check carry no fingerprint.
  if (const auto it = ckpt.blobs.find(kCorpusBlob); it != ckpt.blobs.end() && it->second != s.corpus_fingerprint) {
    RT_THROW(DataError, where, ": the checkpoint was trained on another corpus (", it->second, " there, ",
             s.corpus_fingerprint, " here); ", whyAnotherCorpus(ckpt, s.job));
  }
  at::NoGradGuard no_grad;
  for (auto& p : s.model->named_parameters()) {
    auto it = ckpt.model.find(p.key());
    if (it == ckpt.model.end()) RT_THROW(DataError, where, ": checkpoint lacks parameter '", p.key(), "'");
    if (!it->second.sizes().equals(p.value().sizes())) {
      RT_THROW(DataError, where, ": checkpoint parameter '", p.key(), "' has shape ", it->second.sizes(),
               ", the model has ", p.value().sizes());
    }
    p.value().copy_(it->second);
  }
}

int64_t stepsToTrain(const config::JobConfig& job, const data::BatchLoader& loader) {
  const int64_t accumulation = job.ddp.accumulation_steps;
  const int64_t steps = loader.totalBatches() / accumulation;
  if (steps <= 0 && job.run.max_steps == 0 && job.run.epochs == 0) {
    RT_THROW(ConfigError, "run.epochs is 0 and run.max_steps is 0: nothing to train; set one of them");
  }
  if (steps <= 0) {
    RT_THROW(DataError, "the training data gives ", loader.totalBatches(), " batches of ", job.data.batch_size,
             " pairs per rank, fewer than one optimizer step (ddp.accumulation_steps ", accumulation,
             "); use a smaller data.batch_size or more data");
  }
  return steps;
}

// This process's share of the memory it maps (Linux's PSS): pages shared with other processes, such as the
// tables of ddp.sparse_sync shared, count divided by the number of processes mapping them, where RSS counts
// them whole in each. 0 where /proc does not say.
double proportionalSetMiB() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  double kib = 0;
  while (in >> key) {
    if (key == "Pss:" && in >> kib) return kib / 1024.0;
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0.0;
}

// Before a checkpoint: a step can turn the parameters to NaN or infinity while the loss it reported was
// still finite, and a checkpoint of them would be resumed from (ringrun --max-restarts) into the same
// failure. Every rank checks its own copy; the verdict is reduced, so all stop together. The same sum says
// whether rank 0's metrics file lost records (`metrics_failed`): true when it did, and then no checkpoint may
// be written either, as a run resumed from it would have no records of the steps the file lost.
bool checkBeforeCheckpoint(Session& s, int64_t step, bool metrics_failed) {
  at::NoGradGuard no_grad;
  std::string bad;
  for (const auto& p : s.model->named_parameters()) {
    if (!at::isfinite(p.value()).all().item<bool>()) bad += (bad.empty() ? "" : ", ") + p.key();
  }
  std::vector<double> ranks_bad = {bad.empty() ? 0.0 : 1.0, metrics_failed ? 1.0 : 0.0};
  s.sumOverRanks(ranks_bad);
  if (ranks_bad[1] > 0) return true;
  if (ranks_bad[0] > 0) {
    RT_THROW(Error, "training diverged: at step ", step, " the parameters are not finite",
             bad.empty() ? std::string(" on another rank") : " (" + bad + ")",
             "; no checkpoint written. Lower optim.lr or check the optimizer's settings");
  }
  return false;
}

// Where the job writes must be a directory or nothing yet: found out before loading data and training,
// not as a filesystem error at the first checkpoint.
void checkOutputDirectories(const config::JobConfig& job) {
  const std::pair<const char*, std::string> dirs[] = {{"run.output_dir", job.run.output_dir},
                                                      {"checkpoint.dir", checkpointDir(job)}};
  for (const auto& [key, dir] : dirs) {
    std::error_code ec;
    const auto status = std::filesystem::status(dir, ec);
    if (std::filesystem::exists(status) && !std::filesystem::is_directory(status)) {
      RT_THROW(ConfigError, key, ": ", dir, " exists and is not a directory");
    }
  }
  // The export at the end goes to run.output_dir/embeddings.txt: found out now, not after training, if
  // that is a file the job reads.
  const std::string corpus = data::jobCorpusPath(job);
  refuseInputsAsExport("run.output_dir: its export", outputPath(job, "embeddings.txt"),
                       {{"job's corpus", corpus}, {"job's corpus cache", corpus + ".rtc"},
                        {"job's items file", data::jobItemsPath(job)}});
  // The files written at the end, found out now if one of them is a directory, device or FIFO (the write
  // would refuse it after the whole run). The metrics file has its own checks (checkMetricsFile).
  std::vector<std::string> written_at_end = {"embeddings.txt", "items.tsv"};
  if (job.log.plot) written_at_end.push_back("training.png");
  if (job.log.trace_steps > 0) written_at_end.push_back("trace.json");
  for (const std::string& name : written_at_end) {
    try {
      atomicWriteTarget(outputPath(job, name));
    } catch (const DataError& e) {
      RT_THROW(ConfigError, "run.output_dir: ", e.what(), "; the run writes its ", name, " there at the end");
    }
  }
}

// Whether the export may replace an items.tsv beside it: in the run's own directory it is an earlier run's
// copy; in the directory of the job's corpus or items file (a run.output_dir pointed at the data) it is the
// user's own, left alone (with a warning) as `ringtrain export` does.
bool mayReplaceItemsBesideExport(const config::JobConfig& job) {
  std::error_code ec;
  for (const std::string& input : {data::jobCorpusPath(job), data::jobItemsPath(job)}) {
    if (input.empty()) continue;
    const std::filesystem::path dir = std::filesystem::absolute(input, ec).parent_path();
    if (std::filesystem::equivalent(dir, job.run.output_dir, ec)) return false;
  }
  return true;
}

// Rank 0 writes the run's files: a directory it cannot create or write is said now, with its key, not as
// an internal error at the first checkpoint or metrics line. (checkpoint.dir is made when the run holds it.)
void makeOutputDirectory(const config::JobConfig& job) {
  std::error_code ec;
  std::filesystem::create_directories(job.run.output_dir, ec);
  if (ec) RT_THROW(DataError, "run.output_dir: cannot create ", job.run.output_dir, ": ", ec.message());
  for (const auto& [key, dir] : {std::pair<const char*, std::string>{"run.output_dir", job.run.output_dir},
                                 std::pair<const char*, std::string>{"checkpoint.dir", checkpointDir(job)}}) {
    if (std::filesystem::exists(dir, ec) && ::access(dir.c_str(), W_OK | X_OK) != 0) {
      RT_THROW(DataError, key, ": cannot write in ", dir, ": ", std::strerror(errno));
    }
  }
}

// The run's directories, held until it ends (core/directory_lock.h): run.output_dir and checkpoint.dir (made
// now, so that it can be held), each on its own: another run's checkpoint.dir may name this run's
// checkpoints directory, or its run.output_dir this one's checkpoint.dir.
std::vector<DirectoryLock> lockOutputDirectories(const config::JobConfig& job) {
  std::vector<DirectoryLock> held;
  held.emplace_back(job.run.output_dir, "run.output_dir");
  const std::string ckpt = checkpointDir(job);
  std::error_code ec;
  std::filesystem::create_directories(ckpt, ec);
  if (ec) RT_THROW(DataError, "checkpoint.dir: cannot create ", ckpt, ": ", ec.message());
  // The same directory written two ways (a link, a bind mount) is held once: a second flock on it would
  // refuse this very run.
  if (!std::filesystem::equivalent(ckpt, job.run.output_dir, ec)) held.emplace_back(ckpt, "checkpoint.dir");
  // The metrics file may be another run's too: one named outright, or another run's default in its
  // run.output_dir. Held where it really is (a link's target). A pipe or device (a FIFO read by a
  // collector, /dev/stdout) is a stream, not records a second run erases.
  const std::string metrics_path = metricsPath(job);
  std::filesystem::path metrics = std::filesystem::weakly_canonical(metrics_path, ec);
  if (ec) metrics = metrics_path;
  // (A missing file is not_found, with ec set: what counts is the type.)
  const auto metrics_type = std::filesystem::status(metrics, ec).type();
  if (metrics_type == std::filesystem::file_type::not_found || metrics_type == std::filesystem::file_type::regular) {
    held.push_back(DirectoryLock::forFile(metrics.string(), "log.metrics_file"));
  }
  return held;
}

// An evaluation's figures as a record of metrics.jsonl (rank 0; none when no query was measured).
void recordEvaluation(RunLog& run_log, int64_t step, const Evaluation& ev, int k) {
  if (ev.ranking.count == 0) return;
  run_log.evaluation(step, fmt::format("\"hr@{0}\":{1:.6f},\"ndcg@{0}\":{2:.6f},\"queries\":{3}", k,
                                       ev.ranking.hitRate(), ev.ranking.ndcg(), ev.ranking.count));
}

// Set by requestCheckpoint() (a signal handler), taken at the next look (checkpoint_request.h).
std::atomic<bool> g_checkpoint_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

// Every rank reads the newest checkpoint itself: ranks that see different checkpoints (nodes whose
// checkpoint.dir is not one shared directory) would resume at different steps, and their collectives, keyed
// on the step, would no longer pair up (a hang, or sums of unlike tensors). Refused on every rank, naming them.
void checkSameResumedStep(Session& s, int64_t step, const std::string& dir) {
  std::vector<double> steps(static_cast<size_t>(s.comm->size()), 0.0);
  steps[static_cast<size_t>(s.comm->rank())] = static_cast<double>(step);  // exact: steps are far below 2^53
  s.sumOverRanks(steps);
  if (std::all_of(steps.begin(), steps.end(), [&](double v) { return v == steps[0]; })) return;
  std::vector<std::string> each;
  for (size_t r = 0; r < steps.size(); ++r) {
    const std::string found =
        steps[r] > 0 ? "step " + std::to_string(static_cast<int64_t>(steps[r])) : std::string("none, a fresh start");
    each.push_back(fmt::format("rank {}: {}", r, found));
  }
  RT_THROW(ConfigError, "the ranks found different checkpoints to resume from in ", dir, " (",
           fmt::format("{}", fmt::join(each, ", ")),
           "): checkpoint.dir must be the same directory for every rank (on several nodes, a shared file system)");
}

// Rank 0 could not write the metrics file: every rank stops at the same collective, rank 0 naming the file.
[[noreturn]] void stopForMetrics(const Session& s, const RunLog& run_log) {
  if (s.leader()) RT_THROW(DataError, run_log.failure());
  throw followingPeer(DataError("rank 0 cannot write the metrics file (it says why)"));
}

// A fresh start writes ckpt-<step> files into checkpoint.dir and keeps only the newest checkpoint.keep, so
// in a directory holding another job's checkpoints it would overwrite and delete them. Refused on every
// rank alike (rank 0 reads; the verdict is reduced), before the data is loaded: a synthetic corpus would
// otherwise be generated anew for a job then refused. A checkpoint of the same settings on another number of
// ranks counts as another job's: it resumes only there. The same job's are removed later
// (removeOwnCheckpoints), saying that --resume would continue from them: left in place, one from a longer
// run would sort newest and outlive this run's own.
struct OwnCheckpoints {
  std::vector<std::string> files;  // rank 0's view; empty on the others
  int64_t newest_step = 0;
};

// Every rank calls it, resuming or not (`fresh` false: nothing is read), so that its reduction is reached by
// all of them even where they disagree on resuming (checkRanksAgree names that later).
OwnCheckpoints refuseOtherJobsCheckpoints(Session& s, const config::JobConfig& job,
                                          const CheckpointManager& checkpoints, bool fresh) {
  std::string refusal;
  OwnCheckpoints own;
  if (s.leader() && fresh) {
    // Every file is read: one this build cannot read (a newer format, damage, not a file at all) may be
    // another job's too, and is not this run's to remove.
    const std::vector<std::string> old = checkpoints.list();
    std::optional<int64_t> newest_step;
    for (auto it = old.rbegin(); it != old.rend() && refusal.empty(); ++it) {
      try {
        const Checkpoint ckpt = readCheckpoint(*it);
        checkSameJob(ckpt, job, *it);
        if (ckpt.world_size != s.comm->size()) {
          refusal = fmt::format("checkpoint {} was written by {} rank(s) and this job has {}; resume it on {}, or "
                                "start afresh in another checkpoint.dir", *it, ckpt.world_size, s.comm->size(),
                                ckpt.world_size);
        }
        if (!newest_step) newest_step = ckpt.global_step;
      } catch (const DataError& e) {
        refusal = e.what();
      }
    }
    if (refusal.empty()) own = {old, newest_step.value_or(0)};
  }
  std::vector<double> refused = {refusal.empty() ? 0.0 : 1.0};
  s.sumOverRanks(refused);
  if (refused[0] > 0) {
    // Another job's checkpoint comes with its own advice (resume with its settings, or another checkpoint.dir).
    const bool advised = refusal.find("checkpoint.dir") != std::string::npos;
    ConfigError error(detail::concat("a fresh start would overwrite checkpoints in ", checkpoints.dir(),
                                     " that are another job's or cannot be read: ",
                                     s.leader() ? refusal : std::string("rank 0 says why"),
                                     advised ? " (or remove them yourself)"
                                             : " (resume, remove them yourself, or use another checkpoint.dir)"));
    if (!s.leader()) error.setFollowsPeer();
    throw error;
  }
  return own;
}

void removeOwnCheckpoints(const CheckpointManager& checkpoints, const OwnCheckpoints& own) {
  if (own.files.empty()) return;
  info("starting afresh: removing the {} checkpoint(s) in {} (this job's, newest at step {}; --resume would "
       "continue from there)", own.files.size(), checkpoints.dir(), own.newest_step);
  for (const std::string& file : own.files) {
    std::error_code ec;
    std::filesystem::remove(file, ec);
    if (ec) RT_THROW(DataError, "starting afresh: cannot remove ", file, ": ", ec.message());
  }
}

}  // namespace

std::string metricsPath(const config::JobConfig& job) {
  return job.log.metrics_file.empty() ? outputPath(job, "metrics.jsonl") : job.log.metrics_file;
}

namespace {

// Tells the launcher why this rank fails (failure_report.h), in the words main() prints: called while the
// session's communicator is still connected, so before any peer can fail on this rank's going.
void recordCurrentFailure() noexcept {
  try {
    throw;
  } catch (const c10::Error& e) {  // its what() carries a C++ backtrace
    recordFailure(kExitFailure, describeTorchFailure(e));
  } catch (const std::bad_alloc&) {  // as main() words it: ringrun prints this record
    recordFailure(kExitFailure, describeBadAlloc());
  } catch (const std::exception& e) {
    recordFailure(e);
  } catch (...) {
  }
}

// Runs `body` on a new session of the job; a failure is recorded before the session goes.
template <typename Body>
TrainSummary inSession(const config::JobConfig& job, const dist::ProcessInfo& process, Body&& body) {
  log::setRank(process.rank, process.world_size);
  at::set_num_threads(job.run.threads);
  Session s(job, process);
  try {
    return body(s);
  } catch (...) {
    recordCurrentFailure();
    throw;
  }
}

// A traced forward+backward's args: the CPU the rank's thread ended it on. On a VM's shared vCPUs ranks have
// run the same work 1.5x apart, which ranks changing from run to run; scripts/trace-summary.py prints each
// rank's usual CPU beside its times, to tell whether the slow ones share CPUs (or their host's cores).
std::string cpuArgs() { return fmt::format("{{\"cpu\":{}}}", ::sched_getcpu()); }

// One step under ddp.steal (src/train/work_stealing.h): the chunks this rank takes of the step's batches, each a
// forward and a backward, the last of them synchronized. Returns the sum of the chunks' weighted losses.
at::Tensor trainStolenStep(WorkStealing& stealing, int64_t step, model::SgnsModel& model,
                           ddp::DistributedDataParallel& ddp, TraceWriter* trace) {
  at::Tensor loss_sum;
  auto add = [&](const at::Tensor& loss) { loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach(); };
  if (stealing.lateMillis() > 0) {  // the tests' seam: a rank held up before the step
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(stealing.lateMillis()));
  }
  std::optional<Chunk> chunk = stealing.claim(step);
  if (!chunk) {
    // Every row of the step was taken before this rank came to it: its synchronized backward runs on one of
    // its own pairs weighted zero, which adds nothing.
    const auto begin = Clock::now();
    const ChunkPairs p = stealing.pairs(step, Chunk{ddp.rank(), 0, 1});
    stealing.finish(step);  // nothing of the step left to read
    const at::Tensor loss = model.forward(p.center, p.context, p.negatives) * 0.0;
    model.holdSparseGradients(false);
    loss.backward();
    add(loss);
    stealing.countNullChunk();
    if (trace != nullptr) {
      trace->span("forward+backward (a pair weighted zero, buckets in flight)", begin, Clock::now(), cpuArgs());
    }
  }
  while (chunk) {
    const auto begin = Clock::now();
    const ChunkPairs p = stealing.pairs(step, *chunk);
    const at::Tensor loss = model.forward(p.center, p.context, p.negatives) * stealing.lossScale(*chunk);
    // The next chunk is taken before this one's backward, which synchronizes when there is none: the last
    // backward must know it is the last.
    const std::optional<Chunk> next = stealing.claim(step);
    // Its rows copied out and nothing left to take: the rank reads nothing more of the step, before its
    // synchronized backward sends anything (what lets the step's slot be written again: work_stealing.h).
    if (!next) stealing.finish(step);
    model.holdSparseGradients(next.has_value());
    if (next) {
      auto guard = ddp.noSync();
      loss.backward();
    } else {
      loss.backward();
    }
    add(loss);
    stealing.count(*chunk);
    const auto end = Clock::now();
    if (stealing.slowdown() > 1.0) std::this_thread::sleep_for((end - begin) * (stealing.slowdown() - 1.0));
    if (trace != nullptr) {
      trace->span(fmt::format("forward+backward ({} pairs of rank {}'s batch{})", chunk->count, chunk->owner,
                              next ? "" : ", buckets in flight"),
                  begin, Clock::now(), cpuArgs());
    }
    chunk = next;
  }
  return loss_sum;
}

// Stops holding the model's sparse rows when a step's passes end, and drops any still held (a pass that threw):
// they would be handed over with the next step's gradient. A step that ends normally holds none (checked
// before finalize()).
class SparseRowsHeld {
 public:
  explicit SparseRowsHeld(model::SgnsModel& model) : model_(model) {}
  ~SparseRowsHeld() { model_.dropHeldSparseGradients(); }
  SparseRowsHeld(const SparseRowsHeld&) = delete;
  SparseRowsHeld& operator=(const SparseRowsHeld&) = delete;

 private:
  model::SgnsModel& model_;
};

TrainSummary train(Session& s) {
  const config::JobConfig& job = s.job;
  const dist::ProcessInfo& process = s.process;
  checkOutputDirectories(job);
  const auto started = Clock::now();
  s.connect();
  // Rank 0 writes the run's files (the synthetic corpus among them, next): its directories are made and
  // held first. Connected, so that the other ranks hear of a refusal at the next collective.
  std::vector<DirectoryLock> held;
  if (s.leader()) {
    makeOutputDirectory(job);
    held = lockOutputDirectories(job);
  }
  CheckpointManager checkpoints(checkpointDir(job), job.checkpoint.keep);
  const bool resume = job.checkpoint.resume || process.restart_count > 0;
  // A fresh start's own old checkpoints, removed once the run is ready to write its own.
  const OwnCheckpoints own_checkpoints = refuseOtherJobsCheckpoints(s, job, checkpoints, /*fresh=*/!resume);
  s.loadData();
  s.buildModel();
  checkRanksAgree(*s.comm, job, s.model->layoutDescription(), s.corpus_fingerprint);

  TrainSummary summary;
  if (s.leader()) {
    info("job '{}': {} rank(s) over {} ({} allreduce, waits poll {} us), device {}, corpus {} lines / {} items, "
         "{} train lines",
         job.run.name, s.comm->size(), s.comm->backendName(), job.comm.allreduce_algorithm,
         std::chrono::duration_cast<std::chrono::microseconds>(s.comm->waitPoll()).count(), s.device.str(),
         s.corpus->numLines(), s.corpus->vocab().size(), s.split->trainLines().size());
    // What the corpus lost on the way, which the counts above do not show: one-item baskets are common.
    const data::CorpusStats& read = s.corpus->stats();
    if (read.short_lines > 0 || read.dropped_tokens > 0) {
      info("corpus: {} of its {} lines kept; {} dropped for holding fewer than 2 items{}{}", read.lines,
           read.source_lines, read.short_lines,
           job.data.min_count > 1 ? fmt::format(" once items seen fewer than data.min_count {} times were removed",
                                                job.data.min_count)
                                  : std::string(" (blank lines included)"),
           read.dropped_tokens > 0 ? fmt::format(" ({} occurrences of such items removed)", read.dropped_tokens)
                                   : std::string());
    }
  }

  // Optimizer state and position: fresh, or the newest checkpoint when resuming (checkpoint.resume, or a
  // relaunch by ringrun --max-restarts). Rank 0 reads the file; parameters reach the others through DDP's
  // broadcast at construction, and every rank reads the (small) optimizer state and position itself.
  NamedTensors params;
  for (const auto& p : s.model->named_parameters()) params.emplace_back(p.key(), p.value());
  std::unique_ptr<Optimizer> optimizer = makeOptimizer(params, job.optim);
  if (s.leader()) checkpoints.removeStaleTempFiles();
  data::LoaderPosition start;
  int64_t global_step = 0;
  std::string kept_balance_cuts;  // the shares a resumed balanced run had learnt (ddp.balance)
  // A log.metrics_file that is somebody's file is refused before a fresh start removes any checkpoint.
  const std::string metrics_path = metricsPath(job);
  if (s.leader()) checkMetricsFile(metrics_path, config::hash(job));
  if (resume) {
    std::string where;
    if (std::optional<Checkpoint> ckpt = checkpoints.loadLatest(&job, &where)) {
      RT_CHECK_T(ConfigError, ckpt->world_size == s.comm->size(), where, ": the checkpoint was written by ",
                 ckpt->world_size, " ranks and this job has ", s.comm->size(),
                 "; resuming bit for bit needs the same world size: resume it on ", ckpt->world_size,
                 " ranks, or start afresh in another checkpoint.dir");
      restoreModel(s, *ckpt, where);
      if (s.leader()) warnOfAnotherBasketPairing(s, *ckpt, where);
      optimizer->loadStateDict(ckpt->optimizer);
      try {
        if (!ckpt->torch_rng_state.defined()) RT_THROW(DataError, "no random generator state");
        restoreTorchRngState(ckpt->torch_rng_state);
      } catch (const std::exception& e) {
        RT_THROW(DataError, where, ": checkpoint's random generator state cannot be restored: ", e.what());
      }
      const auto position = ckpt->blobs.find("data.position");
      if (position == ckpt->blobs.end()) RT_THROW(DataError, where, ": checkpoint has no data position to resume from");
      start = decodePosition(position->second, where);
      if (const auto cuts = ckpt->blobs.find(kBalanceCutsBlob); cuts != ckpt->blobs.end()) {
        kept_balance_cuts = cuts->second;
      }
      global_step = ckpt->global_step;
      summary.resumed_from_step = global_step;
      if (s.leader()) info("resumed from {} at step {}", where, global_step);
    } else if (s.leader()) {
      info("no checkpoint in {}; starting fresh", checkpoints.dir());
    }
    checkSameResumedStep(s, global_step, checkpoints.dir());
  } else if (s.leader()) {
    removeOwnCheckpoints(checkpoints, own_checkpoints);
  }

  ddp::DdpOptions ddp_options = ddp::DdpOptions::fromConfig(job.ddp, job.comm);
  ddp_options.sparse_parameters = s.model->sparseParameterNames();
  ddp_options.unshare_at_destruction = false;  // it goes at the end of the job, with the model: no copy needed
  ddp_options.huge_pages = job.run.huge_pages;
  ddp::DistributedDataParallel ddp(*s.model, *s.comm, ddp_options);
  if (ddp.sharesSparseParameters()) {
    // The owners update rows of one shared table: their per-row optimizer state must be one copy as well.
    optimizer->placeState(ddp.sharedParameterNames(),
                          [&](const std::string& name, const at::Tensor& state) { return ddp.shareOnHost(state, name); });
    if (s.leader()) info("sparse tables shared by the {} ranks on this host; each rank updates the rows it owns", s.comm->size());
    const std::string pages = ddp.sharedMemoryPagesReport();  // with the optimizer's state now
    if (!pages.empty()) info("ddp: {}", pages);
  }
  data::BatchLoader loader(s.corpus, s.split, job, s.comm->rank(), s.comm->size(), start);
  const int64_t total_steps = stepsToTrain(job, loader);
  const LrSchedule schedule(job.optim, total_steps);
  // The loader's next batch, for the job's step `step` (from 1): it has one for every step it counted.
  auto batchForStep = [&](int64_t step) {
    std::optional<data::Batch> batch = loader.next();
    RT_CHECK(batch.has_value(), "the loader ended before step ", step, " of ", total_steps);
    return std::move(*batch);
  };
  // Skip-gram without negatives has a trivial optimum: every pair's score high, every vector alike. The loss
  // falls to nothing while the rankings get worse than popularity.
  if (s.leader() && job.data.negatives == 0) {
    warn("data.negatives is 0: nothing pushes unrelated items apart, so the loss falls to nothing while the "
         "vectors crowd together and recommendations get no better than chance; 5 is the default");
  }
  // A warmup that fills the run leaves the lr below optim.lr throughout (or, linear, no step to decay in).
  // (LrSchedule: step s of the warmup runs at lr * (s + 1) / warmup_steps, s counted from 0.)
  if (s.leader() && job.optim.warmup_steps > 0 &&
      job.optim.warmup_steps >= total_steps - (job.optim.schedule == "linear" ? 1 : 0)) {
    warn("optim.warmup_steps {} covers the whole run of {} steps: the lr {}", job.optim.warmup_steps, total_steps,
         job.optim.warmup_steps > total_steps ? fmt::format("stays below optim.lr {} throughout", job.optim.lr)
                                              : std::string("reaches optim.lr only at the end and never decays"));
  }

  const std::vector<EvalQuery> queries = toEvalQueries(data::heldOutQueries(*s.corpus, *s.split));
  summary.metrics_path = s.leader() ? metrics_path : "";
  RunLog run_log(s.leader(), metrics_path, total_steps, global_step, config::hash(job));
  // About 700 bytes of events per traced step (five events, the finalize one with per-bucket times); the
  // reservation stops at 64 MiB, beyond which the buffer grows as it must.
  const int64_t reserved_steps = std::clamp<int64_t>(job.log.trace_steps, 0, 65536);
  // Ranks on one host (what same-host copy needs, agreed by all) share the steady clock, whose epoch lines
  // them up exactly. Across hosts the clocks differ by the hosts' uptimes: there every rank counts from the
  // end of one barrier, the same instant to within the barrier's release.
  auto trace_origin = Clock::time_point{};
  if (job.log.trace_steps > 0 && s.comm->size() > 1 && !s.comm->canReadPeerMemory()) {
    s.comm->barrier();
    trace_origin = Clock::now();
  }
  TraceWriter trace(s.comm->rank(), static_cast<size_t>(reserved_steps) * 1024, trace_origin);

  const int accumulation = job.ddp.accumulation_steps;
  const int64_t pairs_per_step = static_cast<int64_t>(job.data.batch_size) * accumulation * s.comm->size();
  WorkBalance balance(*s.comm, job.data.batch_size, job.ddp.balance);
  auto holdTheRowsTheRangeTakes = [&] {
    const auto [before, after] = balance.neighbourRowsToHold();
    loader.holdNeighbourRows(before, after);
  };
  if (balance.enabled()) {
    // Every rank read the same checkpoint (checkSameResumedStep): the same verdict everywhere.
    const bool restored = !kept_balance_cuts.empty() && balance.restoreCuts(kept_balance_cuts);
    if (s.leader()) {
      info("work balance on: every {} steps, ranks slower per pair train fewer of each step's pairs", kBalanceWindow);
      if (restored) {
        info("work balance goes on with the checkpoint's shares, pairs per micro-batch: {}", balance.describe());
      } else if (!kept_balance_cuts.empty()) {
        warn("work balance: the checkpoint's cuts '{}' do not fit this job; the shares start even",
             kept_balance_cuts.substr(0, 200));
      }
      const int64_t first_decision = (global_step / kBalanceWindow + 1) * kBalanceWindow;  // the job's steps
      if (global_step < total_steps && !WorkBalance::decidesAfter(first_decision, total_steps)) {
        warn("ddp.balance: the run ends at step {} before its first decision (at step {}; every {} steps): the "
             "shares stay {}", total_steps, first_decision, kBalanceWindow, restored ? "as they are" : "even");
      }
    }
    holdTheRowsTheRangeTakes();
  } else if (!balance.whyOff().empty() && s.leader()) {
    warn("ddp.balance is true but off in this job: {}", balance.whyOff());
  }
  WorkStealing stealing(*s.comm, job.data.batch_size, job.data.negatives, job.ddp.steal_min_pairs, job.ddp.steal);
  if (stealing.enabled()) {
    if (s.leader()) {
      info("work stealing on: ranks done with their own batch take pairs of the others' (at least {} at a time)",
           job.ddp.steal_min_pairs);
      if (job.ddp.steal_min_pairs >= job.data.batch_size) {
        warn("ddp.steal_min_pairs {} is at least data.batch_size {}: a rank takes its own batch whole, and only the "
             "batches of ranks late to start move", job.ddp.steal_min_pairs, job.data.batch_size);
      }
    }
    if (global_step < total_steps) {
      // Every rank's batch of the first step is offered before any rank takes rows of it; later steps' are
      // offered a step ahead (see below).
      stealing.publish(global_step, batchForStep(global_step + 1));
    }
    s.comm->barrier();
  } else if (!stealing.whyOff().empty() && s.leader()) {
    warn("ddp.steal is true but off in this job: {}",
         job.comm.same_host_copy || s.comm->size() == 1
             ? stealing.whyOff()
             : std::string("comm.same_host_copy is false, and stealing needs the ranks to map each other's memory"));
  }
  // After every thread of the job has started (the sparse-row helper starts in the first step's backward:
  // swept again after it).
  ThreadPinning pinning(job.run.pin_threads, s.process.local_world_size);
  if (pinning.enabled()) {
    const std::string pinned = pinning.sweep();
    if (s.leader()) info("run.pin_threads: rank 0's {}", pinned);
  } else if (!pinning.whyOff().empty() && s.leader()) {
    warn("run.pin_threads is true but off in this job: {}", pinning.whyOff());
  }
  int64_t batches_rebuilt = 0;  // under ddp.balance: built before this rank's range grew past their rows
  const int64_t first_step = global_step;
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  int64_t loss_count = 0;
  double total_data_wait = 0;
  std::optional<std::pair<int64_t, double>> first_logged_loss;  // (step, loss) of the first log line
  auto window_start = Clock::now();
  // Time the window spent evaluating and checkpointing: not training, so not in its pairs/s (QA saw each
  // window after an evaluation or a checkpoint read a third slower).
  Clock::duration window_paused{0};
  const auto loop_start = Clock::now();
  int64_t window_steps = 0;
  CheckpointRequestSchedule request_looks(global_step);
  auto last_request_look = Clock::now();
  // Rank 0's whole milliseconds since the last look, sent with the look (0 from the other ranks).
  const auto leaderMsSinceLook = [&] {
    const auto now = Clock::now();
    const double ms = s.leader() ? std::floor(seconds(now - last_request_look) * 1e3) : 0.0;
    last_request_look = now;
    return ms;
  };

  while (global_step < total_steps) {
    const auto step_begin = Clock::now();
    double step_data_wait = 0;
    const bool traced = global_step - first_step < job.log.trace_steps;
    // Where the loader stands after this step: what a checkpoint at its end stores. Under ddp.steal the loader
    // is a batch ahead (the next step's batch is offered while this one runs).
    data::LoaderPosition position_after_step = loader.position();
    SparseRowsHeld release(*s.model);  // the passes below may hold the tables' rows until their last backward
    if (stealing.enabled()) {
      const auto wait_begin = Clock::now();
      if (global_step + 1 < total_steps) {
        stealing.publish(global_step + 1, batchForStep(global_step + 2));
      }
      const auto wait_end = Clock::now();
      step_data_wait += seconds(wait_end - wait_begin);
      if (traced) trace.span("data wait", wait_begin, wait_end);
      loss_sum.add_(trainStolenStep(stealing, global_step, *s.model, ddp, traced ? &trace : nullptr));
      ++loss_count;
    }
    for (int micro = 0; micro < accumulation && !stealing.enabled(); ++micro) {
      const auto wait_begin = Clock::now();
      data::Batch batch = batchForStep(global_step + 1);
      if (balance.enabled() && !balance.covers(batch.first_row, batch.center.size(0))) {
        // Queued before the cuts moved this far: the rows this rank now trains, built here (data wait). On
        // the host, where it was queued: ddp.balance is for CPU ranks only (config refuses run.device cuda).
        const auto [before, after] = balance.neighbourRowsToHold();
        batch = loader.build(batch.epoch, batch.step, before, after);
        ++batches_rebuilt;
      }
      const auto wait_end = Clock::now();
      step_data_wait += seconds(wait_end - wait_begin);
      const bool sync = micro + 1 == accumulation;
      auto forward_backward = [&] {
        // This rank's range of the step's pairs: its own batch, or under ddp.balance a range that may take
        // rows of its neighbours' (the batch holds them), its mean loss weighted by its share so that the
        // ranks' average is the mean over all the step's pairs.
        const int64_t from = balance.begin() - batch.first_row, count = balance.count();
        RT_CHECK(from >= 0 && from + count <= batch.center.size(0), "work balance: rows [", balance.begin(),
                 ", +", count, ") are outside the batch's [", batch.first_row, ", +", batch.center.size(0), ")");
        at::Tensor loss = s.model->forward(batch.center.narrow(0, from, count), batch.context.narrow(0, from, count),
                                           batch.negatives.narrow(0, from, count));
        if (balance.enabled()) loss = loss * balance.lossScale();
        loss.backward();
        loss_sum.add_(loss.detach());
        ++loss_count;
      };
      // The tables' rows of the micro-batches before the last are kept in the model and handed over with the
      // last one's: one copy of them instead of one per micro-batch.
      s.model->holdSparseGradients(!sync);
      if (sync) {
        forward_backward();
      } else {
        auto guard = ddp.noSync();
        forward_backward();
      }
      balance.record(seconds(Clock::now() - wait_end), balance.count());
      if (traced) {
        trace.span("data wait", wait_begin, wait_end);
        trace.span(sync ? "forward+backward (buckets in flight)" : "forward+backward (no sync)", wait_end, Clock::now(),
                   cpuArgs());
      }
    }
    // Every pass's rows reached the tables' gradients: the last backward released them.
    RT_CHECK(!s.model->holdsSparseGradients(), "step ", global_step + 1, ": sparse rows still held in the model");
    const auto sync_begin = Clock::now();
    ddp.finalize();
    const auto sync_end = Clock::now();
    optimizer->setLearningRate(schedule.at(global_step));
    optimizer->step();
    const auto optimizer_end = Clock::now();
    ddp.zeroGrad();  // with shared tables, waits until every owner has written its rows
    const auto zero_grad_end = Clock::now();
    ++global_step;
    if (global_step == first_step + 1) pinning.sweep();
    if (balance.endStep(global_step, total_steps)) holdTheRowsTheRangeTakes();  // a collective every 10 steps
    const auto step_end = Clock::now();
    ++window_steps;
    const ddp::DdpStats& stats = ddp.stats();
    const double sync_wait = seconds(sync_end - sync_begin);
    total_data_wait += step_data_wait;

    if (global_step - first_step <= job.log.trace_steps) {
      std::string buckets;
      for (const auto& b : stats.buckets) {
        buckets += fmt::format("{}\"bucket {} ({} bytes)\":{:.3f}", buckets.empty() ? "" : ",", b.index, b.bytes,
                               millis(b.last_allreduce));
      }
      trace.span("finalize: wait for buckets + sparse sync", sync_begin, sync_end,
                 fmt::format("{{\"allreduce_ms\":{{{}}},\"sparse_sync_ms\":{:.3f},\"sparse_exchange_ms\":{:.3f},"
                             "\"sparse_overlapped_ms\":{:.3f},\"sparse_bytes_sent\":{}}}",
                             buckets, millis(stats.sparse_sync_time), millis(stats.sparse_exchange_time),
                             millis(stats.sparse_overlapped_time), stats.sparse_bytes_sent));
      trace.span("optimizer step", sync_end, optimizer_end);
      trace.span("zero grad", optimizer_end, zero_grad_end);
      if (balance.enabled() && WorkBalance::decidesAfter(global_step, total_steps)) {
        trace.span("work balance", zero_grad_end, step_end);
      }
      trace.counter("bytes sent", step_end, static_cast<double>(stats.dense_bytes_sent + stats.sparse_bytes_sent));
    }

    const bool log_now = global_step % job.log.every_steps == 0 || global_step == total_steps;
    StepRecord record;
    record.step = global_step;
    // The epoch of the batch just trained: after an epoch's last batch the position is the next's first.
    if (!stealing.enabled()) position_after_step = loader.position();
    const data::LoaderPosition after = position_after_step;
    record.epoch = after.step == 0 && after.epoch > 0 ? after.epoch - 1 : after.epoch;
    record.lr = optimizer->learningRate();
    record.step_ms = seconds(step_end - step_begin) * 1e3;
    record.pairs = pairs_per_step;
    record.data_wait_ms = step_data_wait * 1e3;
    record.sync_wait_ms = sync_wait * 1e3;
    record.dense_bytes = stats.dense_bytes_sent;
    record.sparse_bytes = stats.sparse_bytes_sent;
    bool checkpoint_asked = false;  // requestCheckpoint() on some rank since the last look
    if (log_now) {
      run_log.flushMetrics();  // the steps' records since the last log step: a failure is known in the sum below
      // The loss stays on the device between logs: reading it is the only host round trip it costs. The
      // same sum tells whether any rank was asked for a checkpoint, so that all take it at this step.
      std::vector<double> window = {loss_sum.item<double>(), static_cast<double>(loss_count),
                                    run_log.failure().empty() ? 0.0 : 1.0,
                                    g_checkpoint_requested.exchange(false) ? 1.0 : 0.0, leaderMsSinceLook()};
      s.sumOverRanks(window);
      if (window[2] > 0) stopForMetrics(s, run_log);
      checkpoint_asked = window[3] > 0;
      request_looks.looked(global_step, static_cast<int64_t>(window[4]));
      record.loss = window[1] > 0 ? window[0] / window[1] : 0.0;
      // Every rank holds the same reduced loss, so all stop here together. Going on would write NaN
      // vectors, checkpoints and an export, and report success.
      if (!std::isfinite(record.loss)) {
        RT_THROW(Error, "training diverged: the mean loss of the ", window_steps, " steps up to step ", global_step,
                 " is ", record.loss, " (optim.name ", job.optim.name, ", optim.lr ", job.optim.lr,
                 "); lower optim.lr or check the optimizer's settings");
      }
      record.has_loss = true;
      summary.final_loss = record.loss;
      if (!first_logged_loss) first_logged_loss = std::make_pair(global_step, record.loss);
      const double elapsed = seconds(Clock::now() - window_start - window_paused);
      record.pairs_per_second = elapsed > 0 ? window_steps * pairs_per_step / elapsed : 0.0;
      loss_sum.zero_();
      loss_count = 0;
      window_start = Clock::now();
      window_paused = Clock::duration{0};
      window_steps = 0;
    }
    run_log.record(record);
    if (!log_now && request_looks.due(global_step) && global_step < total_steps) {
      // Between log steps too, so that a request is taken within about a second of training.
      std::vector<double> look = {g_checkpoint_requested.exchange(false) ? 1.0 : 0.0, leaderMsSinceLook()};
      s.sumOverRanks(look);
      checkpoint_asked = look[0] > 0;
      request_looks.looked(global_step, static_cast<int64_t>(look[1]));
    }

    const auto pause_start = Clock::now();  // what follows until the next step is no training
    if (job.eval.every_steps > 0 && global_step % job.eval.every_steps == 0 && global_step < total_steps) {
      const Evaluation ev = evaluate(s, queries, false);
      run_log.note(fmt::format("step {}: {}", global_step, describe(ev, job.eval.k, false)));
      recordEvaluation(run_log, global_step, ev, job.eval.k);
    }
    const bool checkpoint_now =
        (checkpoint_asked || (job.checkpoint.every_steps > 0 && global_step % job.checkpoint.every_steps == 0)) &&
        global_step < total_steps;  // the last step's checkpoint comes at the end
    if (checkpoint_now) {
      run_log.flushMetrics();  // the records up to this step, before a checkpoint of it
      if (checkBeforeCheckpoint(s, global_step, !run_log.failure().empty())) stopForMetrics(s, run_log);
    }
    if (checkpoint_now && s.leader()) {
      summary.checkpoint_path = checkpoints.save(makeCheckpoint(s, *optimizer, global_step, position_after_step, balance));
      // Said once the file is in place: a scheduler that reads this line may stop the job at once.
      if (checkpoint_asked) {
        info("checkpoint at step {}, as asked (SIGUSR1 or SIGUSR2: a scheduler's warning before pre-emption?), "
             "written to {}; training goes on",
             global_step, summary.checkpoint_path);
      }
    }
    if (job.run.crash_at_step > 0 && global_step == job.run.crash_at_step && process.restart_count == 0) {
      // Fault injection for restart tests: die like a killed process would, without cleanup. Only the first
      // attempt dies: one relaunched by ringrun --max-restarts passes the step again and must go on.
      if (checkpoint_now) s.comm->barrier();
      std::fprintf(stderr, "ringtrain: run.crash_at_step %lld reached on rank %d: exiting abruptly\n",
                   static_cast<long long>(global_step), process.rank);
      std::fflush(stderr);
      std::_Exit(kExitFailure);
    }
    window_paused += Clock::now() - pause_start;
  }
  run_log.flushMetrics();  // the last records: not a successful run with records missing
  // One collective for two sums: whether rank 0's metrics failed, and the batches the ranks built again.
  const StealStats& stolen = stealing.stats();
  std::vector<double> end_sums = {run_log.failure().empty() ? 0.0 : 1.0, static_cast<double>(batches_rebuilt),
                                  static_cast<double>(stolen.pairs), static_cast<double>(stolen.pairs_stolen),
                                  static_cast<double>(stolen.chunks), static_cast<double>(stolen.null_chunks)};
  s.sumOverRanks(end_sums);
  if (end_sums[0] > 0) stopForMetrics(s, run_log);
  run_log.finish();
  const double train_seconds = seconds(Clock::now() - loop_start);
  summary.steps = global_step;
  const int64_t steps_here = global_step - first_step;
  summary.pairs_per_second = train_seconds > 0 ? steps_here * pairs_per_step / train_seconds : 0.0;
  summary.data_wait_fraction = train_seconds > 0 ? total_data_wait / train_seconds : 0.0;
  if (s.leader()) {
    info("trained {} steps in {:.1f} s: {:.0f} pairs/s globally, data wait {:.2f}% of step time; {}", steps_here,
         train_seconds, summary.pairs_per_second, 100 * summary.data_wait_fraction, ddp.stats().toString());
    if (balance.enabled()) {
      info("work balance at the end, pairs per micro-batch: {} (the ranks built {} batch(es) again for rows their "
           "queues lacked after the cuts moved)", balance.describe(), static_cast<int64_t>(end_sums[1]));
    }
    if (stealing.enabled() && steps_here > 0) {
      const double rank_steps = static_cast<double>(steps_here) * s.comm->size();
      info("work stealing at the end: {:.0f} of {:.0f} pairs ({:.1f}%) trained by a rank other than their batch's; "
           "{:.2f} pieces per rank and step on average; {:.0f} rank-step(s) found no piece left and ended on a "
           "pair weighted zero", end_sums[3],
           end_sums[2], end_sums[2] > 0 ? 100.0 * end_sums[3] / end_sums[2] : 0.0, end_sums[4] / rank_steps,
           end_sums[5]);
    }
    warnIfNothingLearnt(job, first_logged_loss, global_step, summary.final_loss);
  }
  // Before the evaluation allocates its own buffers: what training holds.
  info("memory after training: PSS {:.0f} MiB", proportionalSetMiB());

  // The end. The final checkpoint first: an evaluation that fails (a rank lost, a signal) must not take the
  // run with it. The others meanwhile wait in the evaluation's first collective, as at periodic checkpoints.
  if (s.leader()) {
    summary.checkpoint_path = checkpoints.save(makeCheckpoint(s, *optimizer, global_step, loader.position(), balance));
  }
  const Evaluation ev = evaluate(s, queries, true);
  putEvaluation(ev, summary);
  // (A finished run resumed replaces its last step's record: RunLog::evaluation.)
  recordEvaluation(run_log, global_step, ev, job.eval.k);
  if (s.leader() && !run_log.failure().empty()) warn("{}", run_log.failure());  // the records before it are whole
  if (job.log.trace_steps > 0) {
    trace.writeFile(outputPath(job, fmt::format("trace-rank{}.json", s.comm->rank())));
    s.comm->barrier();
    if (s.leader()) {
      // One file with every rank as its own process row, when the ranks share this file system.
      // The pieces merged are removed; a rank's piece on another host's file system stays there.
      std::string merged = "{\"traceEvents\":[\n" + trace.eventsJson();
      std::vector<std::string> pieces = {outputPath(job, "trace-rank0.json")};
      for (int r = 1; r < s.comm->size(); ++r) {
        const std::string piece = outputPath(job, fmt::format("trace-rank{}.json", r));
        std::ifstream in(piece);
        std::stringstream text;
        text << in.rdbuf();
        std::string body = text.str();
        const size_t open = body.find('[');
        const size_t close = body.rfind(']');
        if (open != std::string::npos && close != std::string::npos && close > open + 1) {
          merged += ",\n" + body.substr(open + 1, close - open - 1);
          pieces.push_back(piece);
        }
      }
      writeFileAtomically(outputPath(job, "trace.json"), merged + "\n]}\n");
      for (const std::string& piece : pieces) std::remove(piece.c_str());
      info("Chrome trace of {} steps: {} (open in https://ui.perfetto.dev)", job.log.trace_steps,
           outputPath(job, "trace.json"));
    }
  }
  // Rank 0's writing comes after the last collective: no other rank waits through it (an export of a large
  // catalog can take longer than comm.timeout_s).
  if (s.leader()) {
    info("{}", describe(ev, job.eval.k, true));
    summary.export_path = outputPath(job, "embeddings.txt");
    ItemsBeside names(summary.export_path, data::jobItemsPath(job), mayReplaceItemsBesideExport(job));
    const ExportSummary exported = writeItemVectors(summary.export_path, s.vocabTokens(),
                                                    itemVectors(*s.model).to(at::kCPU), s.untrained);
    names.place();
    if (exported.left_out > 0) {
      info("export: {} vectors; left out {} items that training never paired (their vectors are untrained)",
           exported.written, exported.left_out);
    }
    if (job.log.plot) summary.plot_path = run_log.plot(outputPath(job, "training.png"));
  }
  // Every rank says it is done; rank 0 fails the job, naming them, if some rank stopped or hung after its last
  // collective (the launcher would otherwise wait for it forever).
  s.group->finish();
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  info("done in {:.1f} s; peak RSS {:.0f} MiB", seconds(Clock::now() - started), usage.ru_maxrss / 1024.0);
  return summary;
}

TrainSummary evaluateCheckpoint(Session& s, const std::string& checkpoint_path) {
  const config::JobConfig& job = s.job;
  s.connect();
  std::string path;
  const Checkpoint ckpt = readRequestedCheckpoint(checkpoint_path, job, &path);
  refuseAnotherSplit(ckpt, job, path);  // before this job's split is built, which its settings may not allow
  s.loadData();
  s.buildModel();
  restoreModel(s, ckpt, path);
  // Training never checkpoints non-finite parameters (it stops as diverged first); a file that holds them
  // was made some other way, and scoring NaN would report figures of nothing, as export refuses it too.
  for (const auto& p : s.model->named_parameters()) {
    if (!at::isfinite(p.value()).all().item<bool>()) {
      RT_THROW(DataError, "checkpoint ", path, ": its parameter '", p.key(), "' holds NaN or infinite values; nothing "
               "evaluated");
    }
  }
  const std::vector<EvalQuery> queries = toEvalQueries(data::heldOutQueries(*s.corpus, *s.split));
  const Evaluation ev = evaluate(s, queries, true);
  if (s.leader()) info("{} (checkpoint {}, step {})", describe(ev, job.eval.k, true), path, ckpt.global_step);
  TrainSummary summary;
  summary.steps = ckpt.global_step;
  putEvaluation(ev, summary);
  summary.checkpoint_path = path;
  return summary;
}

}  // namespace

void requestCheckpoint() noexcept { g_checkpoint_requested.store(true); }

TrainSummary trainJob(const config::JobConfig& job, const dist::ProcessInfo& process) {
  return inSession(job, process, [](Session& s) { return train(s); });
}

TrainSummary evaluateJob(const config::JobConfig& job, const dist::ProcessInfo& process,
                         const std::string& checkpoint_path) {
  return inSession(job, process, [&](Session& s) { return evaluateCheckpoint(s, checkpoint_path); });
}

}  // namespace ringtrain::train
