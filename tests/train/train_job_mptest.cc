// The main job end to end, as users run it: real processes started by ringrun, over Gloo.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringtrain/model/word2vec_io.h"
#include "ringtrain/train/checkpoint.h"
#include "testing/command.h"

namespace ringtrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::binPath;
using testing::runCommand;

// A small synthetic job: 400 items in 8 categories, quick to train on 2 ranks. (Subsampling is off: in
// a corpus this small every item is "frequent" for word2vec's default threshold.)
std::vector<std::string> smallJob(const std::string& dir) {
  return {"--set", "run.output_dir=" + dir, "--set", "synthetic.items=400", "--set", "synthetic.categories=8",
          "--set", "synthetic.sessions=3000", "--set", "data.batch_size=256", "--set", "data.window=3",
          "--set", "data.subsample=0", "--set", "model.dim=32", "--set", "optim.name=adagrad", "--set", "optim.lr=0.2",
          "--set", "comm.backend=gloo", "--set", "comm.timeout_s=60", "--set", "log.plot=false",
          "--set", "eval.neighbor_sample=200"};
}

std::vector<std::string> ringrun(int ranks, std::vector<std::string> program) {
  std::vector<std::string> argv = {binPath("ringrun"), "--standalone", "--nproc-per-node", std::to_string(ranks)};
  argv.insert(argv.end(), program.begin(), program.end());
  return argv;
}

std::vector<std::string> train(const std::string& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {"--", binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml")};
  for (const auto& a : smallJob(dir)) argv.push_back(a);
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// The small job on 2 ranks through `sh -c`, so that `shell_tail` (appended unquoted) can differ by rank
// ($RANK) or hold settings the shell expands.
std::vector<std::string> ringrunShellJob(const std::string& dir, const std::string& shell_tail) {
  std::string command = binPath("ringtrain") + " train " + testing::sourcePath("configs/default.yaml");
  for (const auto& a : smallJob(dir)) command += " '" + a + "'";
  return ringrun(2, {"--", "sh", "-c", command + " " + shell_tail});
}

double metric(const std::string& out, const std::string& pattern) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(pattern + R"(\s*([0-9.]+))"))) return -1;
  return std::stod(m[1]);
}

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

testing::CommandOptions withDeadline(int seconds) {
  testing::CommandOptions o;
  o.timeout = std::chrono::seconds(seconds);
  return o;
}

// A run.output_dir pointed at the data: the export at the end must not replace the corpus (refused before
// training) nor the user's own items.tsv there (left, with a warning), as `ringtrain export -o` would not.
TEST(TrainJob, TheExportNeverReplacesTheJobsOwnDataFiles) {
  const std::string dir = testing::makeTempDir("ringtrain-data-dir-");
  std::string corpus;
  for (int line = 0; line < 300; ++line) {
    for (int k = 0; k < 5; ++k) corpus += fmt::format("{}i{}", k ? " " : "", (line * 7 + k * 3) % 50);
    corpus += "\n";
  }
  std::ofstream(dir + "/embeddings.txt") << corpus;
  const std::vector<std::string> job = {binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"),
                                        "--set", "run.output_dir=" + dir, "--set", "data.batch_size=64",
                                        "--set", "run.max_steps=5", "--set", "log.plot=false"};
  std::vector<std::string> onto_corpus = job;
  onto_corpus.insert(onto_corpus.end(), {"--set", "data.corpus=" + dir + "/embeddings.txt"});
  const auto refused = runCommand(onto_corpus, withDeadline(120));
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("embeddings.txt is the job's corpus"));
  EXPECT_EQ(readAll(dir + "/embeddings.txt"), corpus);

  std::filesystem::rename(dir + "/embeddings.txt", dir + "/baskets.txt");
  const std::string mine = "id\tkey\tname\tcategory\ni1\tK1\tMine\tmine\n";
  std::ofstream(dir + "/items.tsv") << mine;
  std::ofstream(dir + "/items_v2.tsv") << "id\tkey\tname\tcategory\ni1\tK1\tNew\tnew\n";
  std::vector<std::string> beside_items = job;
  beside_items.insert(beside_items.end(), {"--set", "data.corpus=" + dir + "/baskets.txt", "--set",
                                           "data.items=" + dir + "/items_v2.tsv"});
  const auto r = runCommand(beside_items, withDeadline(120));
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(readAll(dir + "/items.tsv"), mine);
  EXPECT_THAT(r.err, HasSubstr("holds other items than"));
}

// One run per directory: while a run trains in A, another is refused there, naming the holder, and so is
// one whose checkpoint.dir is A's checkpoints (it would remove them starting afresh), and one naming A's
// log.metrics_file (it would start that file anew). Once A ends, A is free.
TEST(TrainJob, ASecondRunInARunningRunsDirectoriesIsRefused) {
  const std::string dir = testing::makeTempDir("ringtrain-held-");
  const std::string other = testing::makeTempDir("ringtrain-other-");
  const std::string job = binPath("ringtrain") + " train " + testing::sourcePath("configs/default.yaml") +
                          " --set log.plot=false --set synthetic.items=200 --set synthetic.sessions=500";
  // A trains in the background until killed; the script waits (bounded) for its lock line, then starts B
  // three ways and reports their exit codes.
  const std::string script =
      job + " --set run.output_dir=$0 --set run.max_steps=100000000 --set log.metrics_file=$1/m.jsonl "
      "> $0.a.log 2>&1 & a=$!\n"
      "for i in $(seq 600); do grep -q '^pid' $0/checkpoints/.ringtrain.lock 2>/dev/null && break; sleep 0.05; done\n" +
      job + " --set run.output_dir=$0 --set run.max_steps=2 > $0.b1.log 2>&1; echo b1=$?\n" +
      job + " --set run.output_dir=$1 --set checkpoint.dir=$0/checkpoints --set run.max_steps=2 > $0.b2.log 2>&1; "
      "echo b2=$?\n" +
      job + " --set run.output_dir=$1/b4 --set log.metrics_file=$1/m.jsonl --set run.max_steps=2 > $0.b4.log 2>&1; "
      "echo b4=$?\n"
      "kill $a; wait $a\n" +
      job + " --set run.output_dir=$0 --set run.max_steps=2 --set checkpoint.resume=true > $0.b3.log 2>&1; "
      "echo b3=$?\n";
  const auto r = runCommand({"bash", "-c", script, dir, other}, withDeadline(180));
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("b1=2"));
  EXPECT_THAT(readAll(dir + ".b1.log"), HasSubstr("run.output_dir: " + dir + " is in use by another ringtrain run (pid "));
  EXPECT_THAT(r.out, HasSubstr("b2=2"));
  EXPECT_THAT(readAll(dir + ".b2.log"), HasSubstr("checkpoint.dir: " + dir + "/checkpoints is in use"));
  EXPECT_THAT(r.out, HasSubstr("b4=2"));
  EXPECT_THAT(readAll(dir + ".b4.log"), HasSubstr("log.metrics_file: " + other + "/m.jsonl is in use"));
  EXPECT_THAT(r.out, HasSubstr("b3=0")) << readAll(dir + ".b3.log");
}

// SIGUSR1 to ringrun (a scheduler's warning before pre-emption) reaches every rank; the ranks look for a
// request about once a second of training, so a checkpoint is written long before the next log step (none
// comes in this run), and training goes on: a second request gets a later checkpoint. (It used to kill the
// ranks, then to wait for the next log step.)
TEST(TrainJob, SigusrWritesACheckpointWithoutWaitingForALogStepAndTrainingGoesOn) {
  const std::string dir = testing::makeTempDir("ringtrain-usr1-");
  std::string job = binPath("ringrun") + " --standalone --nproc-per-node 2 -- " + binPath("ringtrain") + " train " +
                    testing::sourcePath("configs/default.yaml");
  for (const auto& a : smallJob(dir)) job += " '" + a + "'";
  const std::string script =
      job + " --set run.epochs=100000 --set run.max_steps=100000000 --set log.every_steps=100000000 > $0.log 2>&1 &"
      " r=$!\n"
      "for i in $(seq 1200); do grep -q \"job '\" $0.log && break; sleep 0.05; done\n"
      "kill -USR1 $r\n"
      "for i in $(seq 1200); do grep -q 'as asked' $0.log && break; sleep 0.05; done\n"
      "kill -USR1 $r\n"
      "for i in $(seq 1200); do [ $(grep -c 'as asked' $0.log) -ge 2 ] && break; sleep 0.05; done\n"
      "kill -TERM $r; wait $r; echo rc=$?\n";
  const auto r = runCommand({"bash", "-c", script, dir}, withDeadline(180));
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  const std::string log = readAll(dir + ".log");
  EXPECT_THAT(log, HasSubstr("got SIGUSR1: passing it to the ranks (the job goes on)"));
  std::vector<int64_t> steps;
  const std::regex asked(R"(checkpoint at step (\d+), as asked)");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), asked); it != std::sregex_iterator(); ++it) {
    steps.push_back(std::stoll((*it)[1]));
  }
  ASSERT_EQ(steps.size(), 2u) << log;
  EXPECT_LT(steps[0], steps[1]) << "did not train on";
  for (int64_t step : steps) {
    EXPECT_TRUE(std::filesystem::exists(dir + fmt::format("/checkpoints/ckpt-{:012d}.rtck", step))) << log;
  }
  EXPECT_THAT(log, Not(HasSubstr("killed by SIGUSR1")));
  EXPECT_THAT(r.out, HasSubstr("rc=143")) << "stopped by the test";
}

// Rank 0's metrics file that cannot be written (/dev/full: every write fails for want of room) stops the run
// at the next checkpoint, before it is written: a checkpoint ahead of the records would leave a resumed run
// without records of the steps between. (With log steps far apart it used to write the checkpoint first.)
TEST(TrainJob, AMetricsFileThatCannotBeWrittenStopsTheRunBeforeItsNextCheckpoint) {
  const std::string dir = testing::makeTempDir("ringtrain-full-");
  std::vector<std::string> argv = train(dir, {"--set", "log.metrics_file=/dev/full", "--set", "checkpoint.every_steps=5",
                                              "--set", "log.every_steps=1000", "--set", "run.max_steps=40"});
  argv.erase(argv.begin());  // one process, no ringrun
  const auto r = runCommand(argv, withDeadline(120));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("/dev/full: cannot write the metrics")) << r.err;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/checkpoints", ec)) {
    if (e.path().extension() == ".rtck") ADD_FAILURE() << "a checkpoint was written: " << e.path();
  }
}

// A metrics FIFO whose reader goes away mid-run: the run stops naming the file (exit 2), where SIGPIPE used
// to kill the rank without a word.
TEST(TrainJob, AMetricsFifoWhoseReaderLeavesStopsTheRunNamingIt) {
  const std::string dir = testing::makeTempDir("ringtrain-fifo-gone-");
  std::string job = binPath("ringtrain") + " train " + testing::sourcePath("configs/default.yaml");
  for (const auto& a : smallJob(dir)) job += " '" + a + "'";
  const std::string script = "mkfifo $0/m.fifo && (head -c 300 $0/m.fifo > /dev/null &) && sleep 1 && " + job +
                             " --set log.metrics_file=$0/m.fifo --set run.max_steps=400 --set log.every_steps=20; "
                             "echo rc=$?";
  const auto r = runCommand({"bash", "-c", script, dir}, withDeadline(120));
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("rc=2")) << r.err;
  EXPECT_THAT(r.err, HasSubstr("m.fifo: cannot write the metrics")) << r.err;
}

TEST(TrainJob, TwoRanksLearnBetterThanPopularityAndExportEveryItem) {
  const std::string dir = testing::makeTempDir("ringtrain-train-");
  const auto r = runCommand(ringrun(2, train(dir, {"--set", "run.epochs=4"})), withDeadline(240));
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  const double hr = metric(r.out, "HR@10:");
  const double popularity = metric(r.out, "popularity baseline HR@10:");
  ASSERT_GE(hr, 0) << r.out;
  ASSERT_GE(popularity, 0) << r.out;
  EXPECT_GT(hr, popularity + 0.02) << r.out;
  EXPECT_GT(metric(r.out, "category agreement of 10-NN:"), metric(r.out, R"(random pairs:)")) << r.out;
  const model::WordVectors vectors = model::readWord2Vec(dir + "/embeddings.txt");
  EXPECT_EQ(vectors.dim, 32);
  EXPECT_GT(vectors.tokens.size(), 350u);
  EXPECT_EQ(readAll(dir + "/items.tsv"), readAll(dir + "/data/items.tsv")) << "the names are beside the vectors";
  EXPECT_TRUE(std::filesystem::exists(dir + "/metrics.jsonl"));
  EXPECT_THAT(readAll(dir + "/metrics.jsonl"), HasSubstr("\"loss\":"));
}

// The same job at the largest world size the tests start (RINGTRAIN_TEST_MAX_RANKS: 4 here, 8 on the device
// machine): every rank gets a share of the data, and the model still beats popularity.
TEST(TrainJob, MaxRanksTrainTogether) {
  const int ranks = testing::maxTestRanks();
  const std::string dir = testing::makeTempDir("ringtrain-train-max-");
  const auto r = runCommand(ringrun(ranks, train(dir, {"--set", "run.epochs=4"})), withDeadline(240));
  ASSERT_TRUE(r.ok()) << ranks << " ranks\n" << r.out << r.err;
  const double hr = metric(r.out, "HR@10:");
  const double popularity = metric(r.out, "popularity baseline HR@10:");
  ASSERT_GE(hr, 0) << r.out;
  EXPECT_GT(hr, popularity) << r.out;
  EXPECT_THAT(r.out + r.err, HasSubstr(std::to_string(ranks) + " rank(s) over")) << r.out << r.err;
}

// A traced run's trace.json, read by scripts/trace-summary.py as a user would: every rank's phases, the CPU
// each rank's passes ran on, and under ddp.steal the pieces read as each step's one forward+backward.
TEST(TrainJob, ATracedRunsTraceSummarizesPerRank) {
  for (const bool steal : {false, true}) {
    SCOPED_TRACE(steal ? "ddp.steal" : "plain");
    const std::string dir = testing::makeTempDir("ringtrain-trace-");
    std::vector<std::string> extra = {"--set", "run.max_steps=14", "--set", "log.trace_steps=14",
                                      "--set", "ddp.sparse_sync=shared", "--set", "checkpoint.every_steps=0"};
    if (steal) extra.insert(extra.end(), {"--set", "ddp.steal=true", "--set", "run.deterministic=false"});
    const auto r = runCommand(ringrun(2, train(dir, extra)), withDeadline(180));
    ASSERT_TRUE(r.ok()) << r.out << r.err;
    const auto summary = runCommand(
        {"python3", testing::sourcePath("scripts/trace-summary.py"), dir + "/trace.json", "--skip", "2"}, withDeadline(60));
    ASSERT_TRUE(summary.ok()) << summary.out << summary.err;
    const std::string& out = summary.out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\nforward\+backward \(buckets in flight\) +[0-9.]+ +[0-9.]+\n)")))
        << out;
    EXPECT_TRUE(std::regex_search(
        out, std::regex(R"(forward\+backward's CPU, most passes \(share\) +[0-9]+:[0-9]+% +[0-9]+:[0-9]+%\n)")))
        << out;
    EXPECT_THAT(out, HasSubstr("arrival spread at finalize")) << out;
    EXPECT_EQ(out.find("pairs of rank"), std::string::npos) << "a piece left as a phase of its own:\n" << out;
    std::filesystem::remove_all(dir);
  }
}

// run.pin_threads changes where threads run, not what is computed: a lone rank bound to the machine's CPUs
// (ringrun --bind-to cores) pins its threads, says so, and exports the same bytes as unpinned; a rank not
// bound to CPUs of its own says why it does not pin, and trains.
TEST(TrainJob, PinnedThreadsTrainTheSameVectors) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs two CPUs";
  std::string exported[2];
  for (const bool pin : {false, true}) {
    const std::string dir = testing::makeTempDir("ringtrain-pin-");
    std::vector<std::string> argv = {binPath("ringrun"), "--standalone", "--bind-to", "cores"};
    for (const auto& a : train(dir, {"--set", "run.max_steps=30", "--set",
                                     pin ? "run.pin_threads=true" : "run.pin_threads=false"})) {
      argv.push_back(a);
    }
    const auto r = runCommand(argv, withDeadline(120));
    ASSERT_TRUE(r.ok()) << r.out << r.err;
    const std::string pinned_line = "run.pin_threads: rank 0's training thread on CPU ";
    EXPECT_EQ((r.out + r.err).find(pinned_line) != std::string::npos, pin) << r.out << r.err;
    exported[pin] = readAll(dir + "/embeddings.txt");
    std::filesystem::remove_all(dir);
  }
  EXPECT_FALSE(exported[0].empty());
  EXPECT_EQ(exported[0], exported[1]) << "pinned threads changed the vectors";
  const std::string dir = testing::makeTempDir("ringtrain-pin-unbound-");
  const auto r = runCommand(ringrun(1, train(dir, {"--set", "run.max_steps=5", "--set", "run.pin_threads=true"})),
                            withDeadline(120));
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.out + r.err, HasSubstr("run.pin_threads is true but off in this job: this rank is not bound to CPUs "
                                       "of its own"));
  std::filesystem::remove_all(dir);
}

std::vector<std::string> with(std::vector<std::string> args, const std::string& setting) {
  args.insert(args.end(), {"--set", setting});
  return args;
}

// The job on 2 ranks, dying right after the checkpoint of step 20; ringrun relaunches every rank, which
// resume from it.
testing::CommandResult crashAfterStep20AndResume(const std::string& dir, const std::vector<std::string>& job) {
  std::vector<std::string> argv = ringrun(2, train(dir, with(job, "run.crash_at_step=20")));
  argv.insert(argv.begin() + 1, {"--max-restarts", "1"});
  return runCommand(argv, withDeadline(240));
}

const std::vector<std::string> kCheckpointedJob = {"--set", "run.max_steps=30", "--set", "checkpoint.every_steps=10"};

TEST(TrainJob, KilledAndRestartedRunEndsBitForBitLikeAnUninterruptedOne) {
  const std::string straight = testing::makeTempDir("ringtrain-straight-");
  const std::string restarted = testing::makeTempDir("ringtrain-restarted-");
  const auto a = runCommand(ringrun(2, train(straight, kCheckpointedJob)), withDeadline(240));
  ASSERT_TRUE(a.ok()) << a.out << a.err;
  const auto b = crashAfterStep20AndResume(restarted, kCheckpointedJob);
  ASSERT_TRUE(b.ok()) << b.out << b.err;
  EXPECT_THAT(b.err, HasSubstr("resumed from"));
  EXPECT_EQ(readAll(straight + "/embeddings.txt"), readAll(restarted + "/embeddings.txt"));
}

// A crash between checkpoints: the relaunched attempt passes the crash step again and must go on (only
// the first attempt dies), else --max-restarts would relaunch it until the restarts run out.
TEST(TrainJob, ARelaunchPassesTheCrashStepThatKilledTheFirstAttempt) {
  const std::string dir = testing::makeTempDir("ringtrain-crash-between-");
  std::vector<std::string> argv = ringrun(1, train(dir, {"--set", "run.max_steps=12", "--set",
                                                         "checkpoint.every_steps=5", "--set", "run.crash_at_step=7"}));
  argv.insert(argv.begin() + 1, {"--max-restarts", "1"});
  const auto r = runCommand(argv, withDeadline(120));
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("run.crash_at_step 7 reached"));
  EXPECT_THAT(r.err, HasSubstr("resumed from"));
  // metrics.jsonl holds each step once: 1-5 written at the checkpoint of step 5, 6-7 of the dead attempt
  // dropped by the resume, 6-12 from the relaunch; then the final evaluation's record, of step 12.
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::vector<int64_t> steps, evaluations;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    (record.contains("eval") ? evaluations : steps).push_back(record.at("step"));
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(evaluations, (std::vector<int64_t>{12}));
}

// Trains `job` on 2 ranks with sparse rows all-gathered and in shared tables; expects the same embeddings,
// bit for bit (shared does allgather's arithmetic). Returns the shared run's output directory, or "" where
// the OS refuses what sharing needs (reading a peer's memory, or a memfd through /proc), which the run says;
// a fallback for any other reason fails the test.
std::string expectSharedTablesTrainLikeAllgather(const std::vector<std::string>& job, const std::string& name) {
  const std::string gathered = testing::makeTempDir("ringtrain-" + name + "-allgather-");
  const std::string shared = testing::makeTempDir("ringtrain-" + name + "-shared-");
  const auto a = runCommand(ringrun(2, train(gathered, with(job, "ddp.sparse_sync=allgather"))), withDeadline(240));
  EXPECT_TRUE(a.ok()) << a.out << a.err;
  // At debug level the communicator says whether the ranks may read each other's memory, and why not.
  const auto b = runCommand(ringrun(2, train(shared, with(with(job, "ddp.sparse_sync=shared"), "log.level=debug"))),
                            withDeadline(240));
  EXPECT_TRUE(b.ok()) << b.out << b.err;
  const std::string said = b.out + b.err;
  const bool os_refused = said.find("same-host copy off: ") != std::string::npos ||
                          said.find("between ranks on one host failed") != std::string::npos;
  if (os_refused && said.find("shared cannot be used here") != std::string::npos) return "";
  EXPECT_THAT(b.out + b.err, HasSubstr("sparse tables shared by the 2 ranks"));
  EXPECT_EQ(readAll(gathered + "/embeddings.txt"), readAll(shared + "/embeddings.txt"));
  return shared;
}

// ddp.sparse_sync shared keeps one copy of the tables (and of Adagrad's per-row sums) for both ranks, each
// updating the rows it owns. A run killed after a checkpoint resumes to the uninterrupted end, which holds
// only if rank 0's checkpoint has every row's optimizer state, not just the rows it owns.
TEST(TrainJob, SharedTablesTrainLikeAllgatherAndResumeBitForBit) {
  const std::string shared = expectSharedTablesTrainLikeAllgather(kCheckpointedJob, "adagrad");
  if (shared.empty()) GTEST_SKIP() << "this machine does not let processes map each other's memory";
  const std::string restarted = testing::makeTempDir("ringtrain-shared-restarted-");
  const auto c = crashAfterStep20AndResume(restarted, with(kCheckpointedJob, "ddp.sparse_sync=shared"));
  ASSERT_TRUE(c.ok()) << c.out << c.err;
  EXPECT_THAT(c.err, HasSubstr("resumed from"));
  EXPECT_EQ(readAll(shared + "/embeddings.txt"), readAll(restarted + "/embeddings.txt"));
}

// The same with Adam (its per-row step counts live in shared memory too), two micro-batches per step and an
// evaluation inside the run, which all read the tables between steps.
TEST(TrainJob, SharedTablesWithAdamAccumulationAndEvaluationTrainLikeAllgather) {
  const std::string shared = expectSharedTablesTrainLikeAllgather(
      {"--set", "run.max_steps=20", "--set", "optim.name=adam", "--set", "optim.lr=0.01", "--set",
       "ddp.accumulation_steps=2", "--set", "eval.every_steps=10"},
      "adam");
  if (shared.empty()) GTEST_SKIP() << "this machine does not let processes map each other's memory";
}

// The largest of `dir`'s vectors and how far apart they are from `other`'s (the same items, in the same order).
std::pair<float, float> largestAndMostApart(const std::string& dir, const std::string& other) {
  const model::WordVectors x = model::readWord2Vec(dir + "/embeddings.txt");
  const model::WordVectors y = model::readWord2Vec(other + "/embeddings.txt");
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.values.size(), y.values.size());
  float largest = 0, most_apart = 0;
  for (size_t i = 0; i < std::min(x.values.size(), y.values.size()); ++i) {
    largest = std::max(largest, std::abs(x.values[i]));
    most_apart = std::max(most_apart, std::abs(x.values[i] - y.values[i]));
  }
  return {largest, most_apart};
}

// ddp.balance moves pairs of each step from a slower rank to a faster one: the same pairs, the same mean
// gradient, summed in another order. Rank 1 says it is 10 times slower (the tests' seam), so rank 0 ends up
// training half of rank 1's batch (the most a cut moves), and batches queued before the cut moved are built
// again with those rows; the vectors match the unbalanced run's to float rounding, and differ from them by
// more than nothing (the pairs did move).
TEST(TrainJob, BalancedRanksTrainTheSamePairsAsUnbalancedOnes) {
  const std::vector<std::string> job = {"--set", "run.max_steps=100", "--set", "checkpoint.every_steps=0"};
  const std::string even = testing::makeTempDir("ringtrain-unbalanced-");
  const std::string moved = testing::makeTempDir("ringtrain-balanced-");
  testing::CommandOptions options = withDeadline(240);
  options.env["RINGTRAIN_BALANCE_SLOWDOWN"] = "1:10";
  const auto a = runCommand(ringrun(2, train(even, job)), options);
  ASSERT_TRUE(a.ok()) << a.out << a.err;
  EXPECT_THAT(a.out + a.err, Not(HasSubstr("work balance"))) << "off by default";
  const auto b = runCommand(ringrun(2, train(moved, with(with(job, "ddp.balance=true"), "run.deterministic=false"))),
                            options);
  ASSERT_TRUE(b.ok()) << b.out << b.err;
  EXPECT_THAT(b.out + b.err, HasSubstr("work balance at the end, pairs per micro-batch: rank 0 384, rank 1 128"));
  EXPECT_GT(metric(b.out + b.err, "the ranks built"), 0) << "no batch was built again after the cuts moved";
  const auto [largest, most_apart] = largestAndMostApart(even, moved);
  EXPECT_GT(largest, 0.1f) << "the vectors were trained";
  EXPECT_LT(most_apart, 1e-4f * largest) << "balancing changed what was trained, not just the order of its sums";
  EXPECT_GT(most_apart, 0.0f) << "bit-identical: did any pair move?";

  // Killed after the checkpoint of step 60 and relaunched: the resumed attempt goes on with the shares the
  // checkpoint kept (here already settled), not even ones, and still trains the same pairs.
  const std::string restarted = testing::makeTempDir("ringtrain-balanced-restarted-");
  std::vector<std::string> argv = ringrun(
      2, train(restarted, {"--set", "run.max_steps=100", "--set", "checkpoint.every_steps=20", "--set",
                           "ddp.balance=true", "--set", "run.deterministic=false", "--set", "run.crash_at_step=60"}));
  argv.insert(argv.begin() + 1, {"--max-restarts", "1"});
  const auto c = runCommand(argv, options);
  ASSERT_TRUE(c.ok()) << c.out << c.err;
  EXPECT_THAT(c.err, HasSubstr("resumed from"));
  // Near the bound (384, 128) by then, give or take the timings' noise; even would be 256 each.
  EXPECT_GT(metric(c.out + c.err, "work balance goes on with the checkpoint's shares, pairs per micro-batch: rank 0"),
            320)
      << c.out + c.err;
  const auto [largest_c, most_apart_c] = largestAndMostApart(even, restarted);
  EXPECT_LT(most_apart_c, 1e-4f * largest_c) << "the resumed run trained other pairs than the plain one";
}

// ddp.steal: rank 1 sleeps 3 times each chunk's time (the tests' seam), so rank 0, done with its own batch,
// takes rows of rank 1's. The same pairs, the same mean gradient, summed in another order: the vectors match
// the run where each rank trains its own batch to float rounding. A run killed after the checkpoint of step
// 20 resumes from where the loader stood after that step (under stealing it runs a batch ahead), so it too
// ends within rounding of the plain run: a batch skipped or trained twice would move the vectors far more.
TEST(TrainJob, StolenPairsTrainLikeEachRankItsOwnAndResume) {
  const std::string plain = testing::makeTempDir("ringtrain-unstolen-");
  const std::string stolen = testing::makeTempDir("ringtrain-stolen-");
  const std::string restarted = testing::makeTempDir("ringtrain-stolen-restarted-");
  const auto a = runCommand(ringrun(2, train(plain, kCheckpointedJob)), withDeadline(240));
  ASSERT_TRUE(a.ok()) << a.out << a.err;
  EXPECT_THAT(a.out + a.err, Not(HasSubstr("work stealing"))) << "off by default";
  const std::vector<std::string> steal = with(with(with(kCheckpointedJob, "ddp.steal=true"), "run.deterministic=false"),
                                              "ddp.steal_min_pairs=32");
  testing::CommandOptions slowed = withDeadline(240);
  slowed.env["RINGTRAIN_STEAL_SLOWDOWN"] = "1:4";
  const auto b = runCommand(ringrun(2, train(stolen, steal)), slowed);
  ASSERT_TRUE(b.ok()) << b.out << b.err;
  const std::string said = b.out + b.err;
  if (said.find("ddp.steal is true but off") != std::string::npos) {
    GTEST_SKIP() << "this machine does not let processes map each other's memory: " << said;
  }
  EXPECT_THAT(said, HasSubstr("work stealing on"));
  EXPECT_GT(metric(said, "work stealing at the end:"), 0) << "rank 0 took none of rank 1's rows";
  const auto [largest, most_apart] = largestAndMostApart(plain, stolen);
  EXPECT_GT(largest, 0.1f) << "the vectors were trained";
  EXPECT_LT(most_apart, 1e-4f * largest) << "stealing changed what was trained, not just the order of its sums";
  EXPECT_GT(most_apart, 0.0f) << "bit-identical: did any pair move?";

  std::vector<std::string> argv = ringrun(2, train(restarted, with(steal, "run.crash_at_step=20")));
  argv.insert(argv.begin() + 1, {"--max-restarts", "1"});
  const auto c = runCommand(argv, slowed);
  ASSERT_TRUE(c.ok()) << c.out << c.err;
  EXPECT_THAT(c.err, HasSubstr("resumed from"));
  EXPECT_THAT(c.out + c.err, HasSubstr("work stealing at the end:")) << "the resumed attempt stole too";
  const auto [largest_c, most_apart_c] = largestAndMostApart(plain, restarted);
  EXPECT_LT(most_apart_c, 1e-4f * largest_c) << "the resumed run trained other batches than the plain one";
}

// A rank late to every step (the seam's third field: 200 ms before its first claim) finds its batch taken by
// rank 0, in pieces, and ends the step on the pair weighted zero; with a tower (dense buckets beside the rows)
// and rows summed by their owners, the vectors still match the plain run's to float rounding.
TEST(TrainJob, ALateRanksWholeBatchIsTrainedByTheOthers) {
  const std::vector<std::string> job = {"--set", "run.max_steps=20", "--set", "checkpoint.every_steps=0", "--set",
                                        "model.tower_hidden=16", "--set", "ddp.sparse_sync=owner"};
  const std::string plain = testing::makeTempDir("ringtrain-unstolen-owner-");
  const std::string stolen = testing::makeTempDir("ringtrain-stolen-late-");
  const auto a = runCommand(ringrun(2, train(plain, job)), withDeadline(240));
  ASSERT_TRUE(a.ok()) << a.out << a.err;
  testing::CommandOptions late = withDeadline(240);
  late.env["RINGTRAIN_STEAL_SLOWDOWN"] = "1:1:200";
  const auto b = runCommand(
      ringrun(2, train(stolen, with(with(with(job, "ddp.steal=true"), "run.deterministic=false"), "ddp.steal_min_pairs=64"))),
      late);
  ASSERT_TRUE(b.ok()) << b.out << b.err;
  const std::string said = b.out + b.err;
  if (said.find("ddp.steal is true but off") != std::string::npos) {
    GTEST_SKIP() << "this machine does not let processes map each other's memory: " << said;
  }
  // 20 steps of 256 pairs per rank: rank 1's batch taken in most steps.
  EXPECT_GT(metric(said, "work stealing at the end:"), 2000) << said;
  const std::regex zero_weighted(R"(; (\d+) rank-step\(s\) found no piece left and ended on a pair weighted zero)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(said, m, zero_weighted)) << said;
  EXPECT_GT(std::stoi(m[1]), 10) << "rank 1 found its rows taken in most steps";
  const auto [largest, most_apart] = largestAndMostApart(plain, stolen);
  EXPECT_GT(largest, 0.1f);
  EXPECT_LT(most_apart, 1e-4f * largest) << "the zero-weighted pairs or the moved rows changed what was trained";
}

TEST(TrainJob, RanksWithDifferentConfigsStopNamingTheKey) {
  const std::string dir = testing::makeTempDir("ringtrain-mismatch-");
  // rank 1 uses another window
  const auto r = runCommand(ringrunShellJob(dir, "--set data.window=$((3 + RANK))"), withDeadline(120));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.out + r.err, HasSubstr("rank 1 differs from rank 0 in data.window (rank 0: '3', rank 1: '4')"));
}

// Ranks that see different checkpoints (nodes without one shared checkpoint.dir; here a relative one read
// from two working directories, one missing the newest checkpoint) would resume at different steps and
// pair unlike collectives: refused, naming each rank's step.
TEST(TrainJob, RanksThatWouldResumeFromDifferentStepsAreRefused) {
  const std::string dir = testing::makeTempDir("ringtrain-resume-apart-");
  std::string job = binPath("ringtrain") + " train " + testing::sourcePath("configs/default.yaml");
  for (const auto& a : smallJob(dir)) job += " '" + a + "'";
  job += " --set run.output_dir=run --set run.max_steps=20 --set checkpoint.every_steps=10";
  const std::string launch = binPath("ringrun") + " --standalone --nproc-per-node 2 -- sh -c ";
  const std::string script =
      "mkdir -p $0/a && cd $0/a && " + launch + "'" + job + "' > $0/first.log 2>&1 || exit 9\n"
      "cp -r $0/a $0/b && rm $0/b/run/checkpoints/ckpt-000000000020.rtck\n" +
      launch + "'cd $0/$([ $RANK = 0 ] && echo a || echo b) && exec " + job + " --resume' \"$0\" 2>&1; echo rc=$?\n";
  const auto r = runCommand({"bash", "-c", script, dir}, withDeadline(240));
  ASSERT_TRUE(r.ok()) << r.out << r.err << readAll(dir + "/first.log");
  EXPECT_THAT(r.out, HasSubstr("the ranks found different checkpoints to resume from in run/checkpoints (rank 0: step "
                               "20, rank 1: step 10): checkpoint.dir must be the same directory for every rank"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("rc=[1-9]"));
}

// The job's identity (config::hash) leaves ddp.sparse_sync out (checkpoints resume under any mode), but ranks
// must still agree on it (config::fullHash).
TEST(TrainJob, RanksWithDifferentSparseSyncModesStopNamingIt) {
  const std::string dir = testing::makeTempDir("ringtrain-mismatch-sync-");
  const auto r = runCommand(
      ringrunShellJob(dir, "--set ddp.sparse_sync=$([ $RANK = 0 ] && echo auto || echo allgather)"), withDeadline(120));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.out + r.err, HasSubstr("rank 1 differs from rank 0 in ddp.sparse_sync (rank 0: 'auto', rank 1: 'allgather')"));
}

// Named, a corrupt checkpoint is an error; as the newest in a directory (the job's by default), it is
// skipped for the newest valid one, as resume and export do.
TEST(TrainJob, CorruptCheckpointIsRejectedWithItsNameOrSkippedInADirectory) {
  const std::string dir = testing::makeTempDir("ringtrain-corrupt-");
  const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                             "run.max_steps=5", "--set", "run.output_dir=" + dir, "--set", "synthetic.items=200",
                             "--set", "synthetic.sessions=500", "--set", "log.plot=false", "--set",
                             "checkpoint.every_steps=2"},
                            withDeadline(120));
  ASSERT_TRUE(r.ok()) << r.err;
  std::vector<std::string> checkpoints;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/checkpoints")) {
    if (e.path().filename().string().rfind("ckpt-", 0) == 0) checkpoints.push_back(e.path());  // not the run's lock
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  ASSERT_GE(checkpoints.size(), 2u);
  const std::string newest = checkpoints.back(), older = checkpoints[checkpoints.size() - 2];
  std::filesystem::resize_file(newest, std::filesystem::file_size(newest) / 2);
  const std::vector<std::string> eval = {binPath("ringtrain"), "eval", testing::sourcePath("configs/default.yaml"),
                                         "--set", "run.output_dir=" + dir, "--set", "synthetic.items=200",
                                         "--set", "synthetic.sessions=500"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = eval;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return runCommand(argv, withDeadline(120));
  };
  const auto named = with({"--checkpoint", newest});
  EXPECT_EQ(named.exit_code, 2) << named.err;
  EXPECT_THAT(named.err, HasSubstr(newest));
  for (const auto& extra : {std::vector<std::string>{}, std::vector<std::string>{"--checkpoint", dir + "/checkpoints"}}) {
    const auto skipped = with(extra);
    EXPECT_TRUE(skipped.ok()) << skipped.err;
    EXPECT_THAT(skipped.out + skipped.err, HasSubstr("skipping unreadable checkpoint"));
    EXPECT_THAT(skipped.out + skipped.err, HasSubstr("checkpoint: " + older));
  }
}

std::string readBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A fresh start keeps the newest checkpoint.keep files of its directory: another job's there are refused,
// untouched, before the job's synthetic corpus is generated anew over the first job's; the same job's are
// replaced, saying that --resume would have continued from them.
TEST(TrainJob, AFreshStartDoesNotOverwriteAnotherJobsCheckpoints) {
  const std::string dir = testing::makeTempDir("ringtrain-fresh-");
  auto job = [&](const std::string& lr, const std::string& sessions = "500") {
    return std::vector<std::string>{binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                                    "run.max_steps=4", "--set", "run.output_dir=" + dir, "--set", "synthetic.items=200",
                                    "--set", "synthetic.sessions=" + sessions, "--set", "log.plot=false", "--set",
                                    "checkpoint.every_steps=2", "--set", "checkpoint.keep=1", "--set", "optim.lr=" + lr};
  };
  auto train = [&](const std::string& lr, const std::string& sessions = "500") {
    return runCommand(job(lr, sessions), withDeadline(120));
  };
  auto files = [&] {
    std::vector<std::pair<std::string, std::uintmax_t>> found;
    for (const auto& e : std::filesystem::directory_iterator(dir + "/checkpoints")) {
      if (e.path().filename() == ".ringtrain.lock") continue;  // the run's hold on the directory
      found.emplace_back(e.path().filename(), std::filesystem::file_size(e.path()));
    }
    std::sort(found.begin(), found.end());
    return found;
  };
  const auto first = train("0.2");
  ASSERT_TRUE(first.ok()) << first.err;
  const auto before = files();
  ASSERT_EQ(before.size(), 1u);
  const std::string bytes_before = readBytes(dir + "/checkpoints/" + before[0].first);
  const std::string corpus_before = readBytes(dir + "/data/sequences.txt");
  ASSERT_FALSE(corpus_before.empty());
  const auto other = train("0.3", "600");
  EXPECT_EQ(other.exit_code, 2) << other.err;
  EXPECT_THAT(other.err, HasSubstr("a fresh start would overwrite checkpoints in " + dir));
  EXPECT_THAT(other.err, HasSubstr("optim.lr is 0.2 there and 0.3 here"));
  EXPECT_EQ(files(), before);
  EXPECT_TRUE(readBytes(dir + "/checkpoints/" + before[0].first) == bytes_before) << "the checkpoint changed";
  EXPECT_TRUE(readBytes(dir + "/data/sequences.txt") == corpus_before) << "the refused job generated its corpus";
  // The same settings on 2 ranks: a checkpoint resumes only on as many ranks as wrote it, so it is not theirs
  // to remove (a fresh start used to, saying "--resume would continue from there").
  std::vector<std::string> on_two = job("0.2");
  on_two.insert(on_two.begin(), "--");
  const auto two_ranks = runCommand(ringrun(2, on_two), withDeadline(120));
  EXPECT_EQ(two_ranks.exit_code, 2) << two_ranks.err;
  EXPECT_THAT(two_ranks.out + two_ranks.err,
              HasSubstr("a fresh start would overwrite checkpoints in " + dir + "/checkpoints that are another job's "
                        "or cannot be read: checkpoint " + dir + "/checkpoints/" + before[0].first +
                        " was written by 1 rank(s) and this job has 2; resume it on 1, or start afresh in another "
                        "checkpoint.dir (or remove them yourself)"));
  EXPECT_EQ(files(), before);
  EXPECT_TRUE(readBytes(dir + "/checkpoints/" + before[0].first) == bytes_before) << "the checkpoint changed";
  on_two.push_back("--resume");
  const auto resumed_on_two = runCommand(ringrun(2, on_two), withDeadline(120));
  EXPECT_EQ(resumed_on_two.exit_code, 2) << resumed_on_two.err;
  EXPECT_THAT(resumed_on_two.out + resumed_on_two.err,
              HasSubstr(": the checkpoint was written by 1 ranks and this job has 2; resuming bit for bit needs the "
                        "same world size: resume it on 1 ranks, or start afresh in another checkpoint.dir"));
  EXPECT_EQ(files(), before);
  const auto again = train("0.2");
  EXPECT_TRUE(again.ok()) << again.err;
  EXPECT_THAT(again.out + again.err, HasSubstr("starting afresh: removing the 1 checkpoint(s) in"));
  const auto now = files();
  ASSERT_EQ(now.size(), 1u) << "the rerun's own checkpoint, not the old one beside it";
  // A checkpoint this build cannot read (a newer format: another ringtrain's job, maybe) is not a fresh
  // start's to remove; it used to go as "none readable".
  const std::string path = dir + "/checkpoints/" + now[0].first;
  std::string bytes = readBytes(path);
  bytes[8] = 2;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  const auto unreadable = train("0.2");
  EXPECT_EQ(unreadable.exit_code, 2) << unreadable.err;
  EXPECT_THAT(unreadable.err, HasSubstr("that are another job's or cannot be read: checkpoint " + path +
                                        ": format version 2"));
  EXPECT_TRUE(readBytes(path) == bytes) << "the unreadable checkpoint changed";
}

// A metrics file that cannot be written stops every rank at the next log step's reduction, not rank 0 alone
// (its peers would wait in the next collective until the timeout): exit 2, naming the file.
TEST(TrainJob, AMetricsFileThatCannotBeWrittenStopsEveryRank) {
  const std::string dir = testing::makeTempDir("ringtrain-metrics-full-");
  const auto r = runCommand(ringrun(2, train(dir, {"--set", "log.metrics_file=/dev/full", "--set", "run.max_steps=60"})),
                            withDeadline(120));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_THAT(r.out + r.err, HasSubstr("/dev/full: cannot write the metrics (No space left on device)"));
  EXPECT_THAT(r.out + r.err, HasSubstr("rank 0 cannot write the metrics file (it says why)"));
  // Rank 1 fails too, with the same exit code, and may end first: ringrun still blames rank 0.
  EXPECT_THAT(r.err, HasSubstr("ringrun: rank 0 (node 0, local rank 0"));
  EXPECT_THAT(r.out + r.err, ::testing::Not(HasSubstr("did not arrive"))) << "a rank was left waiting";
  std::filesystem::remove_all(dir);
}

TEST(TrainJob, NothingToTrainIsSaidNamingTheKeys) {
  const std::string dir = testing::makeTempDir("ringtrain-nothing-");
  const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                             "run.output_dir=" + dir, "--set", "synthetic.items=200", "--set", "synthetic.sessions=500",
                             "--set", "run.epochs=0", "--set", "run.max_steps=0"},
                            withDeadline(120));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("run.epochs: 0 with run.max_steps 0 trains nothing: set one of them"));
}

TEST(TrainJob, AnOutputDirectoryThatIsAFileIsRefusedBeforeTraining) {
  const std::string dir = testing::makeTempDir("ringtrain-outfile-");
  std::ofstream(dir + "/file") << "x";
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"run.output_dir", dir + "/file"}, {"checkpoint.dir", dir + "/file"}}) {
    const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                               "run.output_dir=" + dir + "/out", "--set", key + "=" + value, "--set",
                               "synthetic.items=200", "--set", "synthetic.sessions=500"},
                              withDeadline(120));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr(key + ": " + dir + "/file exists and is not a directory"));
    if (key == "checkpoint.dir") {  // (with run.output_dir a file, nothing could be written under it anyway)
      EXPECT_FALSE(std::filesystem::exists(dir + "/out/metrics.jsonl")) << "refused before training";
    }
  }
}

// A directory where the run writes a file at its end (the export, the picture) was found only after the
// whole run; now before training.
TEST(TrainJob, ADirectoryWhereTheRunWritesAFileAtTheEndIsRefusedBeforeTraining) {
  const std::string dir = testing::makeTempDir("ringtrain-enddir-");
  for (const std::string name : {"embeddings.txt", "training.png"}) {
    const std::string out = dir + "/" + name + ".run";
    std::filesystem::create_directories(out + "/" + name);
    const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                               "run.output_dir=" + out, "--set", "synthetic.items=200", "--set",
                               "synthetic.sessions=500", "--set", "log.plot=true"},
                              withDeadline(120));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("run.output_dir: cannot write " + out + "/" + name + ": it is a directory"));
    EXPECT_THAT(r.err, HasSubstr("the run writes its " + name + " there at the end"));
    EXPECT_FALSE(std::filesystem::exists(out + "/metrics.jsonl")) << "refused only after training";
  }
  std::filesystem::remove_all(dir);
}

// With no held-out queries (data.eval_fraction 0) there is no hit rate to give: the summary says so
// instead of printing HR@10 0.0000, which would read as a model that never hits.
TEST(TrainJob, WithoutHeldOutQueriesTheHitRateIsNotMeasuredRatherThanZero) {
  const std::string dir = testing::makeTempDir("ringtrain-noeval-");
  const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                             "run.output_dir=" + dir, "--set", "data.eval_fraction=0", "--set", "run.max_steps=3",
                             "--set", "synthetic.items=200", "--set", "synthetic.sessions=500", "--set",
                             "log.plot=false"},
                            withDeadline(120));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("HR@10: not measured (no line is held out: see data.eval_fraction)"));
  EXPECT_THAT(r.out, Not(HasSubstr("HR@10: 0.0000")));
  EXPECT_THAT(r.err, HasSubstr("eval: HR@10 not measured (no line is held out"));
  // Lines held out, but each one's hidden item was seen before it: no query either, and it says why.
  std::ofstream(dir + "/repeats.txt") << [] {
    std::string text;
    for (int i = 0; i < 60; ++i) text += fmt::format("x{0} y{0} z{0} x{0}\n", i);
    return text;
  }();
  const auto repeats = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                                   "run.output_dir=" + dir + "/repeats", "--set", "data.corpus=" + dir + "/repeats.txt",
                                   "--set", "run.max_steps=3", "--set", "data.batch_size=64", "--set", "log.plot=false"},
                                  withDeadline(120));
  ASSERT_EQ(repeats.exit_code, 0) << repeats.err;
  EXPECT_THAT(repeats.out, HasSubstr("HR@10: not measured (none of the 12 held-out lines gives a query"));
  // k as large as the catalogue: every target is a hit, which the figure must not be read without.
  const auto wide = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                                "run.output_dir=" + dir + "/wide", "--set", "eval.k=199", "--set", "run.max_steps=3",
                                "--set", "synthetic.items=200", "--set", "synthetic.sessions=500", "--set",
                                "log.plot=false"},
                               withDeadline(120));
  ASSERT_EQ(wide.exit_code, 0) << wide.err;
  EXPECT_THAT(wide.out, HasSubstr("HR@199: 1.0000"));
  EXPECT_THAT(wide.out, HasSubstr("(k = 199 is at least the "));
  EXPECT_THAT(wide.out, HasSubstr("every target is a hit)"));
}

// Items that no training line contains (here: only ever a held-out session's hidden last item) keep their
// initial vectors: the export leaves them out and says how many.
TEST(TrainJob, TheExportLeavesOutItemsTrainingNeverSaw) {
  const std::string dir = testing::makeTempDir("ringtrain-untrained-");
  {
    std::ofstream corpus(dir + "/corpus.txt");
    for (int i = 0; i < 40; ++i) corpus << "a" << i % 7 << " b" << i % 5 << " c" << i % 3 << " last" << i << "\n";
  }
  const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                             "run.output_dir=" + dir + "/run", "--set", "data.corpus=" + dir + "/corpus.txt", "--set",
                             "data.eval_fraction=1", "--set", "data.eval_hide_last=1", "--set", "data.subsample=0",
                             "--set", "run.max_steps=5", "--set", "data.batch_size=64",
                             "--set", "log.plot=false"},
                            withDeadline(120));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("left out 40 items that training never paired"));
  const model::WordVectors v = model::readWord2Vec(dir + "/run/embeddings.txt");
  EXPECT_EQ(v.tokens.size(), 7u + 5u + 3u);
  EXPECT_EQ(v.find("last0"), -1);
  EXPECT_GE(v.find("a0"), 0);
}

// A rank that never starts is named within comm.timeout_s, before any backend waits for it (MPI_Init has
// no limit of its own).
TEST(TrainJob, ARankThatNeverStartsIsNamedWithinTheTimeout) {
  const std::string dir = testing::makeTempDir("ringtrain-alone-");
  testing::CommandOptions o = withDeadline(60);
  o.env = {{"RANK", "0"}, {"WORLD_SIZE", "3"}, {"MASTER_ADDR", "127.0.0.1"},
           {"MASTER_PORT", std::to_string(testing::freeLoopbackPort())}};
  const auto start = std::chrono::steady_clock::now();
  const auto r = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                             "run.output_dir=" + dir, "--set", "comm.timeout_s=3", "--set", "synthetic.items=200",
                             "--set", "synthetic.sessions=500"},
                            o);
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("rank(s) 1, 2 of 3 did not reach the job's store within comm.timeout_s 3 s"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

// Under ringrun a rank stopped before it reached the store (here it stops itself) is named by its process in
// the meeting's timeout: its address never reached the store, so rank 0 asks which of ringrun's children are
// stopped.
TEST(TrainJob, ARankStoppedBeforeTheMeetingIsNamedByItsProcess) {
  const std::string dir = testing::makeTempDir("ringtrain-stopped-early-");
  std::string command = binPath("ringtrain") + " train " + testing::sourcePath("configs/default.yaml");
  for (const auto& a : smallJob(dir)) command += " '" + a + "'";
  const auto r = runCommand(
      ringrun(2, {"--", "sh", "-c", "[ \"$RANK\" = 1 ] && kill -STOP $$; exec " + command + " --set comm.timeout_s=3"}),
      withDeadline(90));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.out + r.err, ::testing::ContainsRegex("rank\\(s\\) 1 of 2 did not reach the job's store within "
                                                      "comm.timeout_s 3 s: not started, or stuck before it; rank 1's "
                                                      "process \\(pid [0-9]+, this machine\\) is stopped"));
}

// RANK/WORLD_SIZE by hand with a job token exported (as the README asks for a store off loopback): rank 0
// hosts the store, which takes the token. The token once made the ranks take the store for ringrun's, and
// no rank hosted it.
TEST(TrainJob, AHandLaunchWithAJobTokenMeetsInRankZerosStore) {
  const std::string dir = testing::makeTempDir("ringtrain-byhand-");
  std::string command = binPath("ringtrain") + " train " + testing::sourcePath("configs/default.yaml");
  for (const auto& a : smallJob(dir)) command += " '" + a + "'";
  command += " --set run.max_steps=10 --set comm.timeout_s=20";
  testing::CommandOptions o = withDeadline(120);
  o.env = {{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"RINGTRAIN_JOB_TOKEN", "a-secret"},
           {"MASTER_PORT", std::to_string(testing::freeLoopbackPort())}};
  const auto r = runCommand({"sh", "-c", "RANK=1 " + command + " > /dev/null 2>&1 & one=$!; RANK=0 " + command +
                                             "; zero=$?; wait $one; echo \"exits $zero $?\""},
                            o);
  EXPECT_THAT(r.out, HasSubstr("exits 0 0")) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("HR@10:"));
}

// A run that learns nothing (SGD at a small lr: sparse gradients are batch means) says so; the default
// optimizer learns.
TEST(TrainJob, ALossThatNeverMovesIsSaidAndTheDefaultsLearn) {
  const std::string dir = testing::makeTempDir("ringtrain-flat-");
  auto train = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> argv = {binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"),
                                     "--set", "run.output_dir=" + dir + "/" + out, "--set", "run.max_steps=150",
                                     "--set", "synthetic.items=500", "--set", "synthetic.sessions=3000", "--set",
                                     "log.plot=false", "--set", "log.every_steps=25"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return runCommand(argv, withDeadline(120));
  };
  const auto flat = train("flat", {"--set", "optim.name=sgd", "--set", "optim.lr=0.05"});
  ASSERT_EQ(flat.exit_code, 0) << flat.err;
  EXPECT_THAT(flat.err, HasSubstr("nothing was learnt. optim.lr 0.05 is likely far too small for optim.name sgd"));
  const auto defaults = train("defaults", {});
  ASSERT_EQ(defaults.exit_code, 0) << defaults.err;
  EXPECT_THAT(defaults.err, Not(HasSubstr("nothing was learnt")));
  EXPECT_GT(metric(defaults.out, "HR@10:"), metric(defaults.out, "popularity baseline HR@10:"));
}

// A run whose loss stops being a number ends with an error naming the step, on every rank, before it writes
// NaN vectors and reports success; the metrics written before it stay valid JSON.
TEST(TrainJob, DivergedTrainingStopsNamingTheStep) {
  const std::string dir = testing::makeTempDir("ringtrain-diverged-");
  const auto r = runCommand(
      ringrunShellJob(dir, "--set optim.name=sgd --set optim.lr=1000000 --set log.every_steps=5 --set run.max_steps=40"),
      withDeadline(120));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.out + r.err, HasSubstr("training diverged: the mean loss of the 5 steps up to step "));
  EXPECT_THAT(r.out + r.err, HasSubstr("optim.lr 1e+06"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/embeddings.txt"));
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    ++lines;
    EXPECT_NO_THROW({
      const auto parsed = nlohmann::json::parse(line);
      (void)parsed;
    }) << line;
  }
  EXPECT_GT(lines, 0);

  // Checkpoints between log steps: the parameters are checked before each, so none holds NaN.
  const std::string ckdir = testing::makeTempDir("ringtrain-diverged-ck-");
  const auto c = runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                             "run.output_dir=" + ckdir, "--set", "synthetic.items=200", "--set",
                             "synthetic.sessions=500", "--set", "log.plot=false", "--set", "optim.name=sgd", "--set",
                             "optim.lr=1000000", "--set", "checkpoint.every_steps=1", "--set", "log.every_steps=50",
                             "--set", "run.max_steps=40"},
                            withDeadline(120));
  EXPECT_FALSE(c.ok());
  EXPECT_THAT(c.err, HasSubstr("training diverged"));
  const auto e = runCommand({binPath("ringtrain"), "export", "--checkpoint", ckdir + "/checkpoints", "-o",
                             ckdir + "/vectors.txt"},
                            withDeadline(120));
  if (e.ok()) {
    const std::string text = readBytes(ckdir + "/vectors.txt");
    EXPECT_EQ(text.find("nan"), std::string::npos) << "a checkpoint holds NaN parameters";
    EXPECT_EQ(text.find("inf"), std::string::npos) << "a checkpoint holds infinite parameters";
  }
}

// A corpus with the same items in another order (here: more sessions, so other counts) keeps the model's
// shape: the checkpoint's own item list tells it apart.
TEST(TrainJob, CheckpointOfAnotherCorpusIsRejectedNamingAnItem) {
  const std::string dir = testing::makeTempDir("ringtrain-vocab-");
  auto generate = [&](const std::string& out, int sessions) {
    const auto g = runCommand({binPath("ringtrain"), "gen-data", "--out", out, "--items", "200", "--sessions",
                               std::to_string(sessions)},
                              withDeadline(60));
    ASSERT_TRUE(g.ok()) << g.err;
  };
  generate(dir + "/data", 500);
  generate(dir + "/more", 600);
  std::filesystem::copy_file(dir + "/data/sequences.txt", dir + "/data/sequences.txt.orig");
  const std::vector<std::string> job = {"--set", "run.output_dir=" + dir, "--set",
                                        "data.corpus=" + dir + "/data/sequences.txt", "--set", "log.plot=false"};
  std::vector<std::string> argv = {binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"),
                                   "--set", "run.max_steps=5"};
  argv.insert(argv.end(), job.begin(), job.end());
  const auto r = runCommand(argv, withDeadline(120));
  ASSERT_TRUE(r.ok()) << r.err;
  std::vector<std::string> eval = {binPath("ringtrain"), "eval", testing::sourcePath("configs/default.yaml")};
  eval.insert(eval.end(), job.begin(), job.end());
  const auto same = runCommand(eval, withDeadline(120));
  EXPECT_TRUE(same.ok()) << same.err;
  // eval.* settings are the evaluation's own.
  eval.insert(eval.end(), {"--set", "eval.k=5"});
  const auto k5 = runCommand(eval, withDeadline(120));
  EXPECT_TRUE(k5.ok()) << k5.err;
  EXPECT_THAT(k5.out, HasSubstr("HR@5"));
  // Another corpus file: said as such, not as a file that changed; with a split setting that differs too, the
  // corpus comes first among the checkpoint's settings (QA was told only data.context, then "changed").
  std::vector<std::string> other = eval;
  other.insert(other.end(), {"--set", "data.corpus=" + dir + "/more/sequences.txt"});
  const auto moved = runCommand(other, withDeadline(120));
  EXPECT_EQ(moved.exit_code, 2) << moved.err;
  EXPECT_THAT(moved.err, HasSubstr("); the checkpoint was trained on " + dir + "/data/sequences.txt and this job reads " +
                                   dir + "/more/sequences.txt"));
  other.insert(other.end(), {"--set", "data.context=basket"});
  const auto split = runCommand(other, withDeadline(120));
  EXPECT_EQ(split.exit_code, 2) << split.err;
  EXPECT_THAT(split.err, HasSubstr("(data.corpus is \"" + dir + "/data/sequences.txt\" there and \"" + dir +
                                   "/more/sequences.txt\" here; data.context is \"window\" there and \"basket\" here)"));
  EXPECT_THAT(split.err, HasSubstr("evaluate with the checkpoint's settings: --set data.corpus=\"" + dir +
                                   "/data/sequences.txt\" --set data.context=\"window\""));
  // The same file by another spelling is no other corpus: only the split setting is named.
  std::vector<std::string> respelt = eval;
  respelt.insert(respelt.end(), {"--set", "data.corpus=" + dir + "/data/../data/sequences.txt", "--set",
                                 "data.context=basket"});
  const auto same_file = runCommand(respelt, withDeadline(120));
  EXPECT_EQ(same_file.exit_code, 2) << same_file.err;
  EXPECT_THAT(same_file.err, HasSubstr("held-out split (data.context is \"window\" there and \"basket\" here)"));
  // Same settings, the file rewritten with more sessions: its item list differs.
  std::filesystem::copy_file(dir + "/more/sequences.txt", dir + "/data/sequences.txt",
                             std::filesystem::copy_options::overwrite_existing);
  const auto e = runCommand(eval, withDeadline(120));
  EXPECT_EQ(e.exit_code, 2) << e.err;
  EXPECT_THAT(e.err, HasSubstr("the checkpoint's items are not this job's: item "));
  // The trained corpus twice over: the same items in the same order, other lines (another held-out split,
  // other batches). eval and --resume refuse it; they used to evaluate on lines it trained on.
  std::filesystem::copy_file(dir + "/data/sequences.txt.orig", dir + "/data/sequences.txt",
                             std::filesystem::copy_options::overwrite_existing);
  {
    const std::string once = readBytes(dir + "/data/sequences.txt");
    std::ofstream(dir + "/data/sequences.txt", std::ios::binary | std::ios::trunc) << once << once;
  }
  const auto doubled = runCommand(eval, withDeadline(120));
  EXPECT_EQ(doubled.exit_code, 2) << doubled.err;
  EXPECT_THAT(doubled.err, HasSubstr("the checkpoint was trained on another corpus ("));
  argv.push_back("--resume");
  const auto resumed = runCommand(argv, withDeadline(120));
  EXPECT_EQ(resumed.exit_code, 2) << resumed.err;
  EXPECT_THAT(resumed.err, HasSubstr("the checkpoint was trained on another corpus ("));
  // Items added (a line of new ones appended): the resume names them, not only the model's other size
  // ("vocab=200" against "vocab=202", which it used to say first).
  std::filesystem::copy_file(dir + "/data/sequences.txt.orig", dir + "/data/sequences.txt",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir + "/data/sequences.txt", std::ios::app) << "brand-new-item-a brand-new-item-b\n";
  const auto added = runCommand(argv, withDeadline(120));
  EXPECT_EQ(added.exit_code, 2) << added.err;
  EXPECT_THAT(added.err, HasSubstr("the checkpoint's items are not this job's: item "));
  EXPECT_THAT(added.err, HasSubstr("(200 items there, 202 here); the corpus has changed since the checkpoint"));
}

// A checkpoint from a build that paired a basket's repeated item with itself (no basket pairing recorded) is
// resumed with a warning that the run no longer replays its stream, where a training basket repeats an item;
// one this build wrote resumes without it.
TEST(TrainJob, ResumingACheckpointThatPairedRepeatsInABasketSaysTheStreamDiffers) {
  const std::string dir = testing::makeTempDir("ringtrain-basket-pairing-");
  {
    std::ofstream corpus(dir + "/baskets.txt");
    for (int b = 0; b < 400; ++b) {
      corpus << "i" << b % 40 << " i" << (b * 7 + 1) % 40 << " i" << (b * 13 + 5) % 40;
      if (b % 10 == 0) corpus << " i" << b % 40;  // listed again
      corpus << "\n";
    }
  }
  // 6 steps, a checkpoint after 3 (and at the end, removed before each resume so that the run resumes at 3).
  const auto train = [&] {
    return runCommand({binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"), "--set",
                       "run.output_dir=" + dir, "--set", "data.corpus=" + dir + "/baskets.txt", "--set",
                       "data.context=basket", "--set", "data.batch_size=64", "--set", "log.plot=false", "--set",
                       "run.max_steps=6", "--set", "checkpoint.every_steps=3", "--resume"},
                      withDeadline(120));
  };
  const std::string middle = dir + "/checkpoints/ckpt-000000000003.rtck";
  const std::string last = dir + "/checkpoints/ckpt-000000000006.rtck";
  const auto first = train();
  ASSERT_TRUE(first.ok()) << first.err;
  ASSERT_TRUE(std::filesystem::remove(last));
  const auto from_this = train();
  ASSERT_TRUE(from_this.ok()) << from_this.err;
  EXPECT_THAT(from_this.err, HasSubstr("resumed from " + middle + " at step 3"));
  EXPECT_THAT(from_this.err, Not(HasSubstr("written by an older ringtrain")));

  ASSERT_TRUE(std::filesystem::remove(last));
  train::Checkpoint older = train::readCheckpoint(middle);
  ASSERT_EQ(older.blobs.erase("data.basket_pairing"), 1u) << "this build records how it paired baskets";
  train::writeCheckpoint(middle, older);
  const auto from_older = train();
  ASSERT_TRUE(from_older.ok()) << from_older.err;
  EXPECT_THAT(from_older.err, HasSubstr("resumed from " + middle + " at step 3"));
  EXPECT_THAT(from_older.err, HasSubstr("ckpt-000000000003.rtck: written by an older ringtrain, which paired an item "
                                        "listed twice in a basket with itself"));
}

// The settings of a small generated job in `dir`, after training it 5 steps (one checkpoint at its end).
std::vector<std::string> smallJobTrained(const std::string& dir) {
  const std::vector<std::string> job = {"--set", "run.output_dir=" + dir, "--set", "synthetic.items=200",
                                        "--set", "synthetic.sessions=500", "--set", "log.plot=false"};
  std::vector<std::string> argv = {binPath("ringtrain"), "train", testing::sourcePath("configs/default.yaml"),
                                   "--set", "run.max_steps=5"};
  argv.insert(argv.end(), job.begin(), job.end());
  const auto r = runCommand(argv, withDeadline(120));
  EXPECT_TRUE(r.ok()) << r.err;
  return job;
}

// `ringtrain eval` of the job, with `extra` arguments after its settings.
testing::CommandResult evalOf(const std::vector<std::string>& job, const std::vector<std::string>& extra) {
  std::vector<std::string> eval = {binPath("ringtrain"), "eval", testing::sourcePath("configs/default.yaml")};
  eval.insert(eval.end(), job.begin(), job.end());
  eval.insert(eval.end(), extra.begin(), extra.end());
  return runCommand(eval, withDeadline(120));
}

// A checkpoint whose parameters hold NaN (training never writes one: it stops as diverged) is refused by eval,
// as by export, naming the parameter: not scored into figures of nothing.
TEST(TrainJob, EvalRefusesACheckpointWithNonFiniteParameters) {
  const std::string dir = testing::makeTempDir("ringtrain-nan-");
  const std::vector<std::string> job = smallJobTrained(dir);
  std::string newest;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/checkpoints")) {
    if (e.path().extension() == ".rtck") newest = std::max(newest, e.path().string());
  }
  ASSERT_FALSE(newest.empty());
  train::Checkpoint poisoned = train::readCheckpoint(newest);
  poisoned.model.begin()->second.view(-1)[0] = std::nanf("");
  const std::string bad = train::CheckpointManager(dir + "/poisoned", 2).save(poisoned);
  const auto e = evalOf(job, {"--checkpoint", bad});
  EXPECT_EQ(e.exit_code, 2) << e.err;
  EXPECT_THAT(e.err, HasSubstr(": its parameter '" + poisoned.model.begin()->first + "' holds NaN or infinite values; "
                               "nothing evaluated"));
}

// eval rebuilds the held-out split from the job's settings: under another one, lines the checkpoint trained
// on would count as held out. A generated corpus is itself made from settings (synthetic.*, run.seed).
TEST(TrainJob, EvalRefusesACheckpointOfAnotherSplitNamingTheSettings) {
  const std::string dir = testing::makeTempDir("ringtrain-split-");
  const std::vector<std::string> job = smallJobTrained(dir);
  auto evalWith = [&](const std::vector<std::string>& extra) { return evalOf(job, extra); };
  const auto split = evalWith({"--set", "data.eval_fraction=0.5"});
  EXPECT_EQ(split.exit_code, 2) << split.err;
  EXPECT_THAT(split.err, HasSubstr("was trained on another corpus or held-out split (data.eval_fraction is 0.2 "
                                   "there and 0.5 here)"));
  EXPECT_THAT(split.err, HasSubstr("evaluate with the checkpoint's settings: --set data.eval_fraction=0.2"));
  // Checked before this job's split is built: eval_fraction 1 leaves nothing to train on, which is not the point.
  EXPECT_THAT(evalWith({"--set", "data.eval_fraction=1", "--set", "data.context=basket"}).err,
              HasSubstr("data.context is \"window\" there and \"basket\" here; data.eval_fraction is 0.2 there and 1 here"));
  const auto corpus = evalWith({"--set", "synthetic.sessions=600", "--set", "run.seed=3"});
  EXPECT_EQ(corpus.exit_code, 2) << corpus.err;
  EXPECT_THAT(corpus.err, HasSubstr("synthetic.sessions is 500 there and 600 here"));
  EXPECT_THAT(corpus.err, HasSubstr("run.seed is"));
  // Under a job with a corpus file, the advice that makes the same corpus starts with an empty data.corpus
  // (without it, following the advice failed on the items). The generated file named by its path is that
  // corpus: evaluated.
  const auto file = evalWith({"--set", "data.corpus=" + dir + "/data/sequences.txt", "--set", "synthetic.sessions=600"});
  EXPECT_EQ(file.exit_code, 2) << file.err;
  EXPECT_THAT(file.err, HasSubstr("data.corpus is \"\" (generated) there"));
  EXPECT_THAT(file.err, HasSubstr("evaluate with the checkpoint's settings: --set data.corpus= --set synthetic.sessions=500"));
  EXPECT_TRUE(evalWith({"--set", "data.corpus=" + dir + "/data/sequences.txt"}).ok());
}

}  // namespace
}  // namespace ringtrain
