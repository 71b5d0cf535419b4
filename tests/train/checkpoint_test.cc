#include "ringtrain/train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/config/config.h"
#include "ringtrain/core/error.h"
#include "ringtrain/model/sgns_model.h"
#include "ringtrain/train/model_state.h"
#include "testing/command.h"

namespace ringtrain::train {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The job every sample() checkpoint was written by.
config::JobConfig sampleJob() {
  config::JobConfig job;
  job.model.dim = 4;
  return job;
}

Checkpoint sample(int64_t step) {
  Checkpoint c;
  c.global_step = step;
  c.epoch = 3;
  c.world_size = 2;
  c.config_hash = config::hash(sampleJob());
  c.config_yaml = config::toYaml(sampleJob());
  c.model_layout = "sgns vocab=3 dim=4";
  c.vocab = {"a", "b b", "c"};
  c.model["input_embedding"] = at::arange(12, at::kFloat).view({3, 4}) * static_cast<double>(step);
  c.optimizer["input_embedding.sum"] = at::ones({3, 4});
  c.optimizer["step"] = at::scalar_tensor(step, at::kLong);
  c.blobs["data.position"] = std::string("\0\1binary\n\xff", 10);
  c.torch_rng_state = captureTorchRngState();
  return c;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void writeFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

// Expects a DataError whose message names the file and holds `also`.
void expectDataError(const std::string& path, const config::JobConfig* job = nullptr, const std::string& also = "") {
  EXPECT_THAT([&] { readCheckpoint(path, job); },
              ::testing::ThrowsMessage<DataError>(::testing::AllOf(HasSubstr(path), HasSubstr(also))));
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::makeTempDir("ckpt"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(CheckpointTest, RoundTripKeepsEveryField) {
  const std::string path = dir_ + "/one.rtck";
  const Checkpoint c = sample(7);
  writeCheckpoint(path, c);
  const config::JobConfig job = sampleJob();
  const Checkpoint r = readCheckpoint(path, &job);
  EXPECT_EQ(r.global_step, 7);
  EXPECT_EQ(r.epoch, 3);
  EXPECT_EQ(r.world_size, 2);
  EXPECT_EQ(r.config_hash, c.config_hash);
  EXPECT_EQ(r.config_yaml, c.config_yaml);
  EXPECT_EQ(r.model_layout, c.model_layout);
  EXPECT_EQ(r.vocab, c.vocab);
  EXPECT_EQ(r.blobs, c.blobs);
  ASSERT_EQ(r.model.size(), 1u);
  EXPECT_TRUE(at::equal(r.model.at("input_embedding"), c.model.at("input_embedding")));
  ASSERT_EQ(r.optimizer.size(), 2u);
  EXPECT_TRUE(at::equal(r.optimizer.at("input_embedding.sum"), c.optimizer.at("input_embedding.sum")));
  EXPECT_TRUE(at::equal(r.torch_rng_state, c.torch_rng_state));
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST_F(CheckpointTest, TruncatedFilesAreRejectedAtEveryOffset) {
  const std::string path = dir_ + "/full.rtck";
  writeCheckpoint(path, sample(1));
  const std::string data = readFile(path);
  for (size_t cut : {size_t{0}, size_t{5}, size_t{8}, size_t{20}, size_t{27}, size_t{28}, size_t{100}, data.size() / 2,
                     data.size() - 1}) {
    const std::string cut_path = dir_ + "/cut" + std::to_string(cut);
    writeFile(cut_path, data.substr(0, cut));
    expectDataError(cut_path);
  }
}

TEST_F(CheckpointTest, FlippedBytesAndForeignFilesAreRejected) {
  const std::string path = dir_ + "/full.rtck";
  writeCheckpoint(path, sample(1));
  const std::string data = readFile(path);
  for (size_t pos : {size_t{0}, size_t{9}, size_t{17}, size_t{25}, size_t{40}, data.size() / 3, data.size() - 1}) {
    std::string bad = data;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x40);
    const std::string bad_path = dir_ + "/flip" + std::to_string(pos);
    writeFile(bad_path, bad);
    expectDataError(bad_path);
  }
  writeFile(dir_ + "/text", "model:\n  dim: 4\n");
  expectDataError(dir_ + "/text");
  expectDataError(dir_ + "/missing");
  config::JobConfig other = sampleJob();
  other.optim.lr = 0.5;
  expectDataError(path, &other, "optim.lr is 0.2 there and 0.5 here");  // another job's checkpoint
}

// The message a checkpoint written by `writer`'s job gives when `reader`'s job resumes it ("" if none).
std::string sameJobError(const Checkpoint& written, const config::JobConfig& reader) {
  try {
    checkSameJob(written, reader, "dir/ckpt-1.rtck");
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

TEST_F(CheckpointTest, AnotherJobsCheckpointNamesEverySettingThatDiffers) {
  const Checkpoint c = sample(1);
  config::JobConfig other = sampleJob();
  other.optim.lr = 0.5;
  other.data.window = 9;
  const std::string what = sameJobError(c, other);
  EXPECT_THAT(what, HasSubstr("dir/ckpt-1.rtck belongs to another job"));
  EXPECT_THAT(what, HasSubstr("data.window is 5 there and 9 here"));
  EXPECT_THAT(what, HasSubstr("optim.lr is 0.2 there and 0.5 here"));
  // How a run is invoked, evaluated and logged is not the job, also when the hashes differ (another version).
  config::JobConfig same = sampleJob();
  same.checkpoint.resume = true;
  same.eval.max_queries = 7;
  same.serve.port = 9;
  EXPECT_EQ(sameJobError(c, same), "");
  Checkpoint older = c;
  older.config_hash = "00000000deadbeef";
  EXPECT_EQ(sameJobError(older, same), "");
  // Strings are quoted, so an empty one shows.
  config::JobConfig named = sampleJob();
  named.data.corpus = "x.txt";
  EXPECT_THAT(sameJobError(c, named), HasSubstr("data.corpus is \"\" there and \"x.txt\" here"));
  // Many differences are shown up to a limit, then counted.
  config::JobConfig far = other;
  far.run.seed = 1;
  far.data.negatives = 2;
  far.data.batch_size = 3;
  far.model.dim = 5;
  far.optim.name = "adam";
  far.optim.warmup_steps = 4;
  far.ddp.bucket_cap_mb = 7;
  EXPECT_THAT(sameJobError(c, far), HasSubstr("and 1 more"));
}

TEST_F(CheckpointTest, ACheckpointFromAnotherVersionWithTheSameSettingsResumes) {
  // An older version had no data.ns_exponent (the hash moves with every key added): the key counts at its
  // default, so only a job that leaves it there is the same job.
  Checkpoint c = sample(1);
  const std::string line = "  ns_exponent: 0.75\n";
  ASSERT_NE(c.config_yaml.find(line), std::string::npos) << c.config_yaml;
  c.config_yaml.erase(c.config_yaml.find(line), line.size());
  c.config_hash = "00000000deadbeef";
  EXPECT_EQ(sameJobError(c, sampleJob()), "");
  config::JobConfig tuned = sampleJob();
  tuned.data.ns_exponent = 0.5;
  EXPECT_THAT(sameJobError(c, tuned), HasSubstr("data.ns_exponent is 0.75 there and 0.5 here"));
  // A setting this version lacks (dropped since, or from a newer version) is ignored, and said; the rest
  // must still match, and a refusal names it too.
  Checkpoint newer = sample(1);
  newer.config_yaml += "future:\n  knob: 1\n";
  newer.config_hash = "00000000deadbeef";
  EXPECT_EQ(sameJobError(newer, sampleJob()), "");
  EXPECT_THAT(checkSameJob(newer, sampleJob(), "p"), ElementsAre("future.knob: 1"));
  EXPECT_THAT(sameJobError(newer, tuned), HasSubstr("settings this version lacks: future.knob: 1"));
  // Without a stored configuration only the hash can tell.
  Checkpoint bare = sample(1);
  bare.config_yaml.clear();
  EXPECT_EQ(sameJobError(bare, sampleJob()), "");
  bare.config_hash = "00000000deadbeef";
  EXPECT_THAT(sameJobError(bare, sampleJob()), HasSubstr("config hash 00000000deadbeef"));
  // A stored configuration this version cannot read is another job, with the reason.
  Checkpoint unreadable = sample(1);
  unreadable.config_yaml = "data:\n  window: 0\n";
  unreadable.config_hash = "00000000deadbeef";
  EXPECT_THAT(sameJobError(unreadable, sampleJob()), HasSubstr("cannot be compared with this job"));
  EXPECT_THAT(sameJobError(unreadable, sampleJob()), HasSubstr("data.window"));
  EXPECT_THAT(sameJobError(unreadable, sampleJob()), Not(HasSubstr("there and")));
}

TEST_F(CheckpointTest, ManagerKeepsTheNewestAndFallsBackPastACorruptOne) {
  CheckpointManager m(dir_ + "/ckpts", 2);
  EXPECT_FALSE(m.loadLatest().has_value());
  for (int64_t step : {10, 20, 30, 40, 50}) m.save(sample(step));
  const auto files = m.list();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_NE(files[0].find("ckpt-000000000040.rtck"), std::string::npos);
  EXPECT_NE(files[1].find("ckpt-000000000050.rtck"), std::string::npos);
  const config::JobConfig job = sampleJob();
  EXPECT_EQ(m.loadLatest(&job)->global_step, 50);
  config::JobConfig other = sampleJob();
  other.run.seed = 1;
  EXPECT_THROW(m.loadLatest(&other), DataError);
  writeFile(files[1], readFile(files[1]).substr(0, 100));
  EXPECT_EQ(m.loadLatest()->global_step, 40);
  writeFile(files[0], "garbage");
  try {
    m.loadLatest();
    ADD_FAILURE() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt-000000000040.rtck"), std::string::npos) << e.what();
  }
}

// A file named for a later step that loading skipped (a newer format here) is neither counted by keep nor
// removed: keep=1 used to remove every readable checkpoint, the one just written included.
TEST_F(CheckpointTest, PruningKeepsTheJustWrittenCheckpointBesideAnUnreadableLaterOne) {
  CheckpointManager m(dir_ + "/ckpts", 1);
  m.save(sample(100));
  const std::string later = dir_ + "/ckpts/ckpt-000000000999.rtck";
  std::string bytes = readFile(m.list().front());
  bytes[8] = 2;  // format version 2
  writeFile(later, bytes);
  EXPECT_EQ(m.loadLatest()->global_step, 100);  // the later one is skipped
  const std::string written = m.save(sample(105));
  EXPECT_THAT(m.list(), ElementsAre(HasSubstr("ckpt-000000000105.rtck"), later));
  EXPECT_TRUE(fs::exists(written));
  EXPECT_EQ(m.loadLatest()->global_step, 105);
}

// A directory, a FIFO or a device is refused with its name before anything is read from it: a FIFO used to
// block, /dev/zero to fill memory, a directory to fail inside the stream with no file named.
TEST_F(CheckpointTest, AFileThatIsNotRegularIsRefusedWithItsName) {
  const std::string directory = dir_ + "/ckpt-000000000007.rtck";
  fs::create_directories(directory);
  expectDataError(directory, nullptr, "not a regular file (a directory)");
  const std::string fifo = dir_ + "/fifo.rtck";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expectDataError(fifo, nullptr, "not a regular file (a FIFO)");
  expectDataError("/dev/zero", nullptr, "not a regular file (a device or socket)");
  // In a checkpoint directory, such an entry is skipped like any unreadable checkpoint.
  CheckpointManager m(dir_, 1);
  try {
    m.loadLatest();
    ADD_FAILURE() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(directory + ": not a regular file"));
  }
}

// A temp file a killed checkpoint write left is removed at the next run's start, even one with this
// process's pid (a relaunch often gets its predecessor's); one of another live process (the parent, here)
// is not.
TEST_F(CheckpointTest, TempFilesOfInterruptedWritesAreRemovedAndLiveOnesKept) {
  const std::string dead = dir_ + "/.ckpt-000000000010.rtck.tmp.999999999";  // above any pid_max
  const std::string same_pid = dir_ + "/.ckpt-000000000015.rtck.tmp." + std::to_string(::getpid());
  const std::string live = dir_ + "/.ckpt-000000000020.rtck.tmp." + std::to_string(::getppid());
  const std::string other = dir_ + "/.notes.tmp.999999999";
  for (const auto& f : {dead, same_pid, live, other}) writeFile(f, "partial");
  CheckpointManager(dir_, 1).removeStaleTempFiles();
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_FALSE(fs::exists(same_pid));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
}

TEST_F(CheckpointTest, TorchRngStateRestores) {
  const at::Tensor state = captureTorchRngState();
  const at::Tensor a = at::rand({5});
  restoreTorchRngState(state);
  EXPECT_TRUE(at::equal(at::rand({5}), a));
}

TEST_F(CheckpointTest, ModelStateRoundTripAndRebuild) {
  config::JobConfig job;
  job.model.dim = 4;
  job.model.tower_hidden = 6;
  model::SgnsModel m(model::sgnsOptionsFromConfig(job.model, 3), 9);
  Checkpoint c = sample(1);
  c.config_yaml = config::toYaml(job);
  c.model = modelState(m);
  const std::string path = dir_ + "/m.rtck";
  writeCheckpoint(path, c);
  const auto rebuilt = modelFromCheckpoint(readCheckpoint(path), path);
  EXPECT_EQ(rebuilt->layoutDescription(), m.layoutDescription());
  for (const auto& p : m.named_parameters()) EXPECT_TRUE(at::equal(p.value(), rebuilt->named_parameters()[p.key()]));
  model::SgnsModel other(model::sgnsOptionsFromConfig(job.model, 5), 9);
  EXPECT_THROW(loadModelState(other, c.model), DataError);
}

}  // namespace
}  // namespace ringtrain::train
