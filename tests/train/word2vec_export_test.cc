#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/config/config.h"
#include "ringtrain/core/error.h"
#include "ringtrain/model/sgns_model.h"
#include "ringtrain/model/word2vec_io.h"
#include "ringtrain/train/checkpoint.h"
#include "ringtrain/train/evaluation.h"
#include "ringtrain/train/item_export.h"
#include "ringtrain/train/model_state.h"
#include "testing/captured_log.h"
#include "testing/command.h"

namespace ringtrain::train {
namespace {

namespace fs = std::filesystem;

class Word2VecTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::makeTempDir("w2v"); }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ + "/" + name) << text; }
  std::string dir_;
};

TEST_F(Word2VecTest, RoundTripIsExact) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor v = at::randn({5, 7}, gen) * 1e3;
  v[0][0] = 1e-30f;
  v[1][1] = -0.0f;
  const std::vector<std::string> tokens = {"a", "b", "item_3", "x/y", "85123A"};
  const std::string path = dir_ + "/sub/vectors.txt";
  model::writeWord2Vec(path, tokens, v);
  const model::WordVectors r = model::readWord2Vec(path);
  EXPECT_EQ(r.tokens, tokens);
  ASSERT_EQ(r.dim, 7);
  const at::Tensor back = at::from_blob(const_cast<float*>(r.values.data()), {5, 7}).clone();
  EXPECT_TRUE(at::equal(back, v));
  EXPECT_EQ(r.find("x/y"), 3);
  EXPECT_EQ(r.find("nope"), -1);
  std::ifstream in(path);
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header, "5 7");
}

TEST_F(Word2VecTest, ExportThroughALinkWritesItsTargetAndADeviceIsRefused) {
  const at::Tensor v = at::ones({2, 3});
  write("target.txt", "old");
  fs::create_symlink("target.txt", dir_ + "/link.txt");
  model::writeWord2Vec(dir_ + "/link.txt", {"a", "b"}, v);
  EXPECT_TRUE(fs::is_symlink(dir_ + "/link.txt")) << "the link must stay a link";
  EXPECT_EQ(model::readWord2Vec(dir_ + "/target.txt").tokens, (std::vector<std::string>{"a", "b"}));
  EXPECT_THROW(model::writeWord2Vec("/dev/null", {"a", "b"}, v), DataError);
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
}

// A temp file an interrupted export left (its writer gone; this process's pid counts as gone, as it has not
// written one yet) is removed by the next export of that file; a running writer's is kept.
TEST_F(Word2VecTest, AnExportRemovesTheTempFilesOfInterruptedOnes) {
  const std::string gone = dir_ + "/.vectors.txt.tmp." + std::to_string(::getpid());
  const std::string running = dir_ + "/.vectors.txt.tmp.1";   // pid 1 is always running
  const std::string other = dir_ + "/.other.txt.tmp." + std::to_string(::getpid());  // another file's
  for (const std::string& path : {gone, running, other}) std::ofstream(path) << "partial";
  model::writeWord2Vec(dir_ + "/vectors.txt", {"a"}, at::ones({1, 2}));
  EXPECT_FALSE(fs::exists(gone));
  EXPECT_TRUE(fs::exists(running));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_EQ(model::readWord2Vec(dir_ + "/vectors.txt").tokens, (std::vector<std::string>{"a"}));
}

TEST_F(Word2VecTest, BadTokensAndMalformedFilesAreDataErrors) {
  EXPECT_THROW(model::writeWord2Vec(dir_ + "/x.txt", {"a b"}, at::zeros({1, 2})), DataError);
  EXPECT_THROW(model::writeWord2Vec(dir_ + "/x.txt", {}, at::zeros({0, 2})), DataError);  // the reader needs N >= 1
  EXPECT_FALSE(fs::exists(dir_ + "/x.txt"));
  EXPECT_FALSE(fs::exists(dir_ + "/.x.txt.tmp." + std::to_string(::getpid()))) << "a refused export left its temp file";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"empty", ""},           {"header", "2\n"},           {"short", "2 2\na 1 2\n"},
      {"few", "1 3\na 1 2\n"}, {"many", "1 1\na 1 2\n"},    {"nan", "1 1\na nan\n"},
      {"dup", "2 1\na 1\na 2\n"}, {"extra", "1 1\na 1\nb 2\n"}, {"word", "1 1\na x\n"},
      // Headers promising more than memory holds: refused, or read up to where the file ends, never allocated.
      {"wide", "2 999999999999\na 1 2 3\n"}, {"tall", "99999999999 3\na 1 2 3\n"},
      {"long", "100000000 100\na 1\n"}};
  for (const auto& [name, text] : bad) {
    write(name, text);
    try {
      model::readWord2Vec(dir_ + "/" + name);
      ADD_FAILURE() << name;
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  EXPECT_THAT([&] { model::readWord2Vec(dir_ + "/wide"); }, ::testing::ThrowsMessage<DataError>(::testing::HasSubstr(
                                                                  ":1: N x D = 2 x 999999999999 is too large")));
  EXPECT_THAT([&] { model::readWord2Vec(dir_ + "/long"); },
              ::testing::ThrowsMessage<DataError>(
                  ::testing::HasSubstr(":2: expected a token and 100 values (the header's D), found 1 after the "
                                       "token")));
  // A binary file's first line is quoted with its bytes escaped, not written raw to the terminal.
  write("binary", std::string("\x7f" "ELF\x02\x1b[2J\0", 10) + "\n");
  EXPECT_THAT([&] { model::readWord2Vec(dir_ + "/binary"); },
              ::testing::ThrowsMessage<DataError>(::testing::HasSubstr(":1: expected a header 'N D' (two integers), got '\\x7fELF\\x02\\x1b[2J\\x00'")));
  // An editor's UTF-8 byte order mark before the header is skipped.
  write("bom", "\xEF\xBB\xBF" "1 2\na 1 2\n");
  EXPECT_EQ(model::readWord2Vec(dir_ + "/bom").tokens, std::vector<std::string>{"a"});
}

// What the exporter writes reads back bit for bit, subnormals included (strtof called them out of range, so
// `neighbors` refused an export holding one); other writers' spacing and tiny float64 values read too.
TEST_F(Word2VecTest, SubnormalsRoundTripAndOtherWritersSpacingReads) {
  const float tiny = std::numeric_limits<float>::denorm_min() * 3;
  const at::Tensor v = at::tensor(std::vector<float>{tiny, -tiny, 1.0f, std::numeric_limits<float>::min()}).view({2, 2});
  model::writeWord2Vec(dir_ + "/sub.txt", {"a", "b"}, v);
  const model::WordVectors r = model::readWord2Vec(dir_ + "/sub.txt");
  ASSERT_EQ(r.values.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(r.values[i], v.view({-1})[static_cast<int64_t>(i)].item<float>()) << i;
  write("loose.txt", "2\t2\r\n\na\t+1  1e-50\r\n\n  b 2 -0.5\n\n");
  const model::WordVectors loose = model::readWord2Vec(dir_ + "/loose.txt");
  EXPECT_EQ(loose.tokens, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(loose.values, (std::vector<float>{1.0f, 0.0f, 2.0f, -0.5f}));
  for (const char* value : {"1e39", "-1e400", "0x10", "1.5.2", "+-1"}) {
    write("bad.txt", std::string("1 1\na ") + value + "\n");
    EXPECT_THAT([&] { model::readWord2Vec(dir_ + "/bad.txt"); },
                ::testing::ThrowsMessage<DataError>(::testing::HasSubstr(":2: value 1 of 'a' is not a finite float32")))
        << value;
  }
}

TEST_F(Word2VecTest, NearestNeighborsByCosine) {
  write("v.txt", "4 2\nq 1 0\nnear 10 1\nfar 0 1\nopp -1 0\n");
  const model::WordVectors v = model::readWord2Vec(dir_ + "/v.txt");
  const auto n = model::nearestNeighbors(v, 0, 2);
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n[0].index, 1);
  EXPECT_EQ(n[1].index, 2);
  EXPECT_NEAR(n[0].similarity, 10 / std::sqrt(101.0), 1e-6);
  // Tiny vectors keep their angles (their squared norms are below float32's range); a zero one has none.
  write("tiny.txt", "3 2\na 1e-30 1e-30\nb 1e-40 2e-40\nz 0 0\n");
  const model::WordVectors tiny = model::readWord2Vec(dir_ + "/tiny.txt");
  const auto t = model::nearestNeighbors(tiny, 0, 2);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].index, 1);
  EXPECT_NEAR(t[0].similarity, 3 / std::sqrt(10.0), 1e-4);  // (1, 1) against (1, 2), the second subnormal
  EXPECT_EQ(t[1].similarity, 0.0f);
}

// A checkpoint of `job` at `step` with a fresh model over `vocab`, saved in <dir>/run/checkpoints.
Checkpoint saveJobCheckpoint(const std::string& dir, const config::JobConfig& job, const model::SgnsModel& m,
                             std::vector<std::string> vocab, int64_t step) {
  Checkpoint c;
  c.global_step = step;
  c.config_hash = config::hash(job);
  c.config_yaml = config::toYaml(job);
  c.vocab = std::move(vocab);
  c.model = modelState(m);
  CheckpointManager(dir + "/run/checkpoints", 2).save(c);
  return c;
}

TEST_F(Word2VecTest, ExportAndNeighborsCommands) {
  config::JobConfig job;
  job.model.dim = 3;
  job.run.output_dir = dir_ + "/run";
  model::SgnsModel m(model::sgnsOptionsFromConfig(job.model, 4), 1);
  const Checkpoint c = saveJobCheckpoint(dir_, job, m, {"apple", "pear", "fig", "kiwi"}, 12);
  write("job.yaml", "run:\n  output_dir: " + dir_ + "/run\n");

  const auto res = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml"});
  ASSERT_TRUE(res.ok()) << res.err;
  const model::WordVectors v = model::readWord2Vec(dir_ + "/run/embeddings.txt");
  EXPECT_EQ(v.tokens, c.vocab);
  const at::Tensor expect = itemVectors(m);
  EXPECT_TRUE(at::equal(at::from_blob(const_cast<float*>(v.values.data()), {4, 3}).clone(), expect));

  // A checkpoint that lists untrained items (no training line contains them) exports the others only.
  Checkpoint listing = c;
  listing.blobs[kUntrainedItemsBlob] = "2";
  const std::string listed = CheckpointManager(dir_ + "/listed", 2).save(listing);
  const auto pruned = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "--checkpoint",
                                           listed, "-o", dir_ + "/pruned.txt"});
  ASSERT_TRUE(pruned.ok()) << pruned.err;
  EXPECT_NE(pruned.out.find("wrote 3 vectors"), std::string::npos) << pruned.out;
  EXPECT_NE(pruned.out.find("left out 1 items that training never paired"), std::string::npos) << pruned.out;
  const model::WordVectors p = model::readWord2Vec(dir_ + "/pruned.txt");
  EXPECT_EQ(p.tokens, (std::vector<std::string>{"apple", "pear", "kiwi"}));
  EXPECT_TRUE(at::equal(at::from_blob(const_cast<float*>(p.values.data()), {3, 3}).clone(),
                        expect.index_select(0, at::tensor(std::vector<int64_t>{0, 1, 3}))));
  listing.blobs[kUntrainedItemsBlob] = "2 9";  // beyond the 4 items
  const std::string bad_list = CheckpointManager(dir_ + "/badlist", 2).save(listing);
  const auto broken = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "--checkpoint",
                                           bad_list, "-o", dir_ + "/broken.txt"});
  EXPECT_EQ(broken.exit_code, 2);
  EXPECT_NE(broken.err.find("malformed list of untrained items"), std::string::npos) << broken.err;
  // Non-finite parameters (never checkpointed by training): nothing is exported that neighbors and serve
  // would refuse.
  Checkpoint poisoned = c;
  for (auto& [name, tensor] : poisoned.model) tensor = tensor.clone().fill_(std::nanf(""));
  const std::string nan_ckpt = CheckpointManager(dir_ + "/nan", 2).save(poisoned);
  const auto nan_export = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml",
                                               "--checkpoint", nan_ckpt, "-o", dir_ + "/nan.txt"});
  EXPECT_EQ(nan_export.exit_code, 2);
  EXPECT_NE(nan_export.err.find("hold NaN or infinite values"), std::string::npos) << nan_export.err;
  EXPECT_FALSE(fs::exists(dir_ + "/nan.txt"));

  write("items.tsv", "id\tkey\tname\tcategory\r\n0\tapple\tRed apple\tfruit\r\n1\tpear\tGreen pear\tfruit\r\n");
  const auto nb = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                       dir_ + "/run/embeddings.txt", "--items", dir_ + "/items.tsv", "--item", "apple",
                                       "-k", "2"});
  ASSERT_TRUE(nb.ok()) << nb.err;
  EXPECT_NE(nb.out.find("Red apple"), std::string::npos) << nb.out;
  EXPECT_EQ(nb.out.find('\r'), std::string::npos) << "a CRLF file's line ends are not part of its fields";
  // items.tsv beside the model is read without --items, and an item may be named by its key.
  write("run/items.tsv", "id\tkey\tname\tcategory\npear\tSKU-7\tGreen pear\tfruit\n");
  const auto by_key = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                           dir_ + "/run/embeddings.txt", "--item", "SKU-7", "-k", "1"});
  ASSERT_TRUE(by_key.ok()) << by_key.err;
  EXPECT_EQ(by_key.out.rfind("nearest to pear  SKU-7  Green pear  [fruit]\n", 0), 0u) << by_key.out;
  const auto missing = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                            dir_ + "/run/embeddings.txt", "--item", "durian"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("durian"), std::string::npos);
  // An item items.tsv names (by id or key) that has no vector in the model is said to be that, not unknown.
  write("run/items.tsv", "id\tkey\tname\tcategory\npear\tSKU-7\tGreen pear\tfruit\ndurian\tSKU-9\tDurian\tfruit\n");
  for (const std::string item : {"durian", "SKU-9"}) {
    const auto no_vector = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                                dir_ + "/run/embeddings.txt", "--item", item});
    EXPECT_EQ(no_vector.exit_code, 2);
    EXPECT_NE(no_vector.err.find("item '" + item + "' (" + dir_ + "/run/items.tsv:3, id durian) has no vector in"),
              std::string::npos) << no_vector.err;
  }
  // A key on a second line for an id that has a vector: that line names nothing (an id's first line does),
  // which is what is said, not that the item has no vector.
  write("run/items.tsv", "id\tkey\tname\tcategory\npear\tSKU-7\tGreen pear\tfruit\npear\tSKU-8\tPear again\tfruit\n");
  const auto second = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                           dir_ + "/run/embeddings.txt", "--item", "SKU-8"});
  EXPECT_EQ(second.exit_code, 2);
  EXPECT_NE(second.err.find("item 'SKU-8' is the key of " + dir_ + "/run/items.tsv:3, a later line for id pear, which "
                            "an earlier line already names"),
            std::string::npos)
      << second.err;
  // A zero vector has no neighbours by cosine: said, not answered with the first k rows at 0.
  write("zero.txt", "3 2\nz 0 0\na 1 0\nb 0 1\n");
  const auto zero = testing::runCommand(
      {testing::binPath("ringtrain"), "neighbors", "--model", dir_ + "/zero.txt", "--item", "z"});
  EXPECT_EQ(zero.exit_code, 2);
  EXPECT_NE(zero.err.find("item 'z' has a zero vector"), std::string::npos) << zero.err;
  // The header the training side and the server ask for, here too (one reader: data/items_file.h).
  write("headless.tsv", "id\tkey\n0\tapple\tRed apple\tfruit\n");
  const auto headless = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                             dir_ + "/run/embeddings.txt", "--items", dir_ + "/headless.tsv",
                                             "--item", "apple"});
  EXPECT_EQ(headless.exit_code, 2);
  EXPECT_NE(headless.err.find("headless.tsv:1: expected a header naming the columns"), std::string::npos) << headless.err;

  write("bad.rtck", "RTCKPT");
  const auto bad = testing::runCommand({testing::binPath("ringtrain"), "export", "--checkpoint", dir_ + "/bad.rtck"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("bad.rtck"), std::string::npos) << bad.err;

  // -o naming what the export reads or the job depends on is refused, and the file left as it was.
  const std::string ckpt = dir_ + "/run/checkpoints/ckpt-000000000012.rtck";
  ASSERT_TRUE(fs::exists(ckpt));
  const auto size = fs::file_size(ckpt);
  const auto over_ckpt = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", ckpt});
  EXPECT_EQ(over_ckpt.exit_code, 2);
  EXPECT_NE(over_ckpt.err.find("is the checkpoint it exports"), std::string::npos) << over_ckpt.err;
  EXPECT_EQ(fs::file_size(ckpt), size);
  const auto over_job = testing::runCommand(
      {testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", dir_ + "/./job.yaml"});
  EXPECT_EQ(over_job.exit_code, 2);
  EXPECT_NE(over_job.err.find("is the job file"), std::string::npos) << over_job.err;
  write("corpus.txt", "apple pear\n");
  const auto over_corpus = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "--set",
                                                "data.corpus=" + dir_ + "/corpus.txt", "-o", dir_ + "/corpus.txt"});
  EXPECT_EQ(over_corpus.exit_code, 2);
  EXPECT_NE(over_corpus.err.find("is the job's corpus"), std::string::npos) << over_corpus.err;
  const auto among_checkpoints = testing::runCommand(
      {testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", dir_ + "/run/checkpoints/vectors.txt"});
  EXPECT_EQ(among_checkpoints.exit_code, 2);
  EXPECT_NE(among_checkpoints.err.find("is in the checkpoint directory"), std::string::npos) << among_checkpoints.err;
  EXPECT_FALSE(fs::exists(dir_ + "/run/checkpoints/vectors.txt"));
  // Nor the run's metrics (a later --resume reads them).
  write("run/metrics.jsonl", "{\"step\":12,\"loss\":0.5}\n");
  const auto over_metrics =
      testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", dir_ + "/run/metrics.jsonl"});
  EXPECT_EQ(over_metrics.exit_code, 2);
  EXPECT_NE(over_metrics.err.find("is the job's metrics file"), std::string::npos) << over_metrics.err;
  // Nor the items.tsv the names go to beside the vectors (the copy replaced the vectors, exit 0), by its name
  // or through a link.
  fs::create_directories(dir_ + "/ex");
  const auto over_names =
      testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", dir_ + "/ex/items.tsv"});
  EXPECT_EQ(over_names.exit_code, 2);
  EXPECT_NE(over_names.err.find("the items' names are put beside the vectors as items.tsv"), std::string::npos)
      << over_names.err;
  EXPECT_FALSE(fs::exists(dir_ + "/ex/items.tsv"));
  fs::create_symlink("items.tsv", dir_ + "/ex/vectors.txt");
  const auto through_link =
      testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", dir_ + "/ex/vectors.txt"});
  EXPECT_EQ(through_link.exit_code, 2) << through_link.err;
}

// The names go in place only after the export is written: an export that fails leaves the old names beside
// the old vectors, and no temp file behind.
TEST_F(Word2VecTest, ItemsBesideAreStagedAndPlacedAfterTheExport) {
  fs::create_directories(dir_ + "/run");
  write("new.tsv", "id\tkey\tname\tcategory\napple\tSKU-1\tRed apple\tfruit\n");
  write("run/items.tsv", "id\tkey\tname\tcategory\npear\tX\tOld pear\tfruit\n");
  const auto read = [&](const std::string& name) {
    std::ifstream in(dir_ + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string old_names = read("run/items.tsv");
  const auto entries = [&] {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir_ + "/run")) n += e.is_regular_file() ? 1 : 0;
    return n;
  };
  {
    ItemsBeside failed(dir_ + "/run/embeddings.txt", dir_ + "/new.tsv", /*replace=*/true);
    EXPECT_EQ(read("run/items.tsv"), old_names) << "replaced before the export was written";
  }  // the export failed: never placed
  EXPECT_EQ(read("run/items.tsv"), old_names);
  EXPECT_EQ(entries(), 1u) << "a staged copy was left behind";
  // What a copy killed before its rename left (hidden, named by its writer's pid, long gone) goes with the
  // next copy; the staged copy is hidden too.
  write("run/.items.tsv.tmp.2147483646", "left by a killed export");
  ItemsBeside names(dir_ + "/run/embeddings.txt", dir_ + "/new.tsv", /*replace=*/true);
  EXPECT_FALSE(fs::exists(dir_ + "/run/.items.tsv.tmp.2147483646"));
  EXPECT_TRUE(fs::exists(dir_ + "/run/.items.tsv.tmp." + std::to_string(::getpid())));
  EXPECT_EQ(read("run/items.tsv"), old_names);
  names.place();
  EXPECT_EQ(read("run/items.tsv"), read("new.tsv"));
  EXPECT_EQ(entries(), 1u);
  // A run with no items file (data.items: none): the earlier run's names would name its vectors, so they go,
  // once the export is written.
  {
    ItemsBeside failed(dir_ + "/run/embeddings.txt", "", /*replace=*/true);
  }
  EXPECT_TRUE(fs::exists(dir_ + "/run/items.tsv")) << "removed before the export was written";
  ItemsBeside none(dir_ + "/run/embeddings.txt", "", /*replace=*/true);
  none.place();
  EXPECT_FALSE(fs::exists(dir_ + "/run/items.tsv"));
}

// A folder that cannot be made (under /proc) fails the export itself: that is all that is said, not a warning
// about the names first. An export that succeeded while the names could not be copied says why at place().
TEST_F(Word2VecTest, NamesThatCannotBeCopiedAreSaidOnlyAfterTheExport) {
  write("new.tsv", "id\tkey\tname\tcategory\napple\tSKU-1\tRed apple\tfruit\n");
  testing::CapturedLog log;
  {
    ItemsBeside failed("/proc/no-such-folder/embeddings.txt", dir_ + "/new.tsv");
  }  // the export failed: not placed
  EXPECT_EQ(log.text().find("cannot copy"), std::string::npos) << log.text();
  ItemsBeside names("/proc/no-such-folder/embeddings.txt", dir_ + "/new.tsv");
  names.place();
  EXPECT_THAT(log.text(), ::testing::HasSubstr("cannot copy " + dir_ + "/new.tsv beside the vectors to "
                                               "/proc/no-such-folder/items.tsv"));
}

// The export takes the job's items.tsv along, so that serve and neighbors find the names beside the vectors;
// an items.tsv already there with other items is somebody's: kept, and said.
TEST_F(Word2VecTest, ExportPutsTheJobsItemsBesideTheVectors) {
  config::JobConfig job;
  job.model.dim = 3;
  job.run.output_dir = dir_ + "/run";
  job.data.corpus = dir_ + "/data/corpus.txt";
  model::SgnsModel m(model::sgnsOptionsFromConfig(job.model, 2), 1);
  saveJobCheckpoint(dir_, job, m, {"apple", "pear"}, 3);
  fs::create_directories(dir_ + "/data");
  fs::create_directories(dir_ + "/other");
  const std::string items = "id\tkey\tname\tcategory\napple\tSKU-1\tRed apple\tfruit\n";
  write("data/items.tsv", items);
  write("job.yaml", "run:\n  output_dir: " + dir_ + "/run\ndata:\n  corpus: " + dir_ + "/data/corpus.txt\n");
  const auto read = [&](const std::string& name) {
    std::ifstream in(dir_ + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };

  const auto res = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml"});
  ASSERT_TRUE(res.ok()) << res.err;
  EXPECT_EQ(read("run/items.tsv"), items);
  EXPECT_NE(res.err.find("beside the vectors"), std::string::npos) << res.err;
  const auto by_key = testing::runCommand({testing::binPath("ringtrain"), "neighbors", "--model",
                                           dir_ + "/run/embeddings.txt", "--item", "SKU-1", "-k", "1"});
  EXPECT_TRUE(by_key.ok()) << by_key.err;

  // An items.tsv there that names the exported items otherwise: a server watching the folder would serve the
  // vectors under its names (export used to warn and write them). Refused, nothing written.
  write("other/items.tsv", "id\tkey\tname\tcategory\npear\tX\tMine\tmine\n");
  const auto refused = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o",
                                            dir_ + "/other/vectors.txt"});
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find(dir_ + "/other/items.tsv names the exported items otherwise than " + dir_ +
                             "/data/items.tsv (item 'apple' is unnamed there and 'Red apple' here)"),
            std::string::npos)
      << refused.err;
  EXPECT_EQ(read("other/items.tsv"), "id\tkey\tname\tcategory\npear\tX\tMine\tmine\n");
  EXPECT_FALSE(fs::exists(dir_ + "/other/vectors.txt"));
  // A catalogue that names them alike, and more: left as it is, without a word.
  const std::string catalogue = items + "plum\tSKU-9\tPlum\tfruit\n";
  write("other/items.tsv", catalogue);
  const auto kept = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o",
                                         dir_ + "/other/vectors.txt"});
  ASSERT_TRUE(kept.ok()) << kept.err;
  EXPECT_EQ(read("other/items.tsv"), catalogue);
  EXPECT_TRUE(fs::exists(dir_ + "/other/vectors.txt"));
  EXPECT_EQ(kept.err.find("items.tsv"), std::string::npos) << kept.err;
  // With no items file at all (the checkpoint's job's gone, this one's data.items: none), one there that
  // names an exported item would name the new vectors: refused too. One that names none of them is no harm.
  fs::rename(dir_ + "/data/items.tsv", dir_ + "/data/items.away");
  write("none.yaml", "run:\n  output_dir: " + dir_ + "/run\ndata:\n  corpus: " + dir_ + "/data/corpus.txt\n  items: none\n");
  const auto unnamed = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/none.yaml", "-o",
                                            dir_ + "/other/vectors2.txt"});
  EXPECT_EQ(unnamed.exit_code, 2) << unnamed.err;
  EXPECT_NE(unnamed.err.find(dir_ + "/other/items.tsv names the exported items (item 'apple' is 'Red apple' there and "
                             "unnamed here), and this job has no items file to put in its place"),
            std::string::npos)
      << unnamed.err;
  EXPECT_FALSE(fs::exists(dir_ + "/other/vectors2.txt"));
  write("other/items.tsv", "id\tkey\tname\tcategory\nplum\tSKU-9\tPlum\tfruit\n");
  const auto unrelated = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/none.yaml", "-o",
                                              dir_ + "/other/vectors2.txt"});
  EXPECT_TRUE(unrelated.ok()) << unrelated.err;
  fs::rename(dir_ + "/data/items.away", dir_ + "/data/items.tsv");

  // Into a directory the export makes: the names are there too. Beside a directory named items.tsv: said
  // as what it is.
  const auto fresh = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o",
                                          dir_ + "/fresh/sub/vectors.txt"});
  ASSERT_TRUE(fresh.ok()) << fresh.err;
  EXPECT_EQ(read("fresh/sub/items.tsv"), items);
  fs::create_directories(dir_ + "/odd/items.tsv");
  const auto odd = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o",
                                        dir_ + "/odd/vectors.txt"});
  ASSERT_TRUE(odd.ok()) << odd.err;
  EXPECT_NE(odd.err.find("items.tsv is not a file (a directory?)"), std::string::npos) << odd.err;

  // "-", standard output to many tools, is refused: not a file named "-" in the working directory.
  fs::create_directories(dir_ + "/cwd");
  testing::CommandOptions in_cwd;
  in_cwd.cwd = dir_ + "/cwd";
  const auto dash = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/job.yaml", "-o", "-"}, in_cwd);
  EXPECT_EQ(dash.exit_code, 2) << dash.err;
  EXPECT_NE(dash.err.find("-o -: an export is written to a file"), std::string::npos) << dash.err;
  EXPECT_TRUE(fs::is_empty(dir_ + "/cwd"));
}

// A job that named its corpus by a relative path, exported from another directory: its items are not found
// from there, and export says so instead of writing the vectors alone in silence.
TEST_F(Word2VecTest, AnExportThatCannotFindTheCorpusSaysItPutsNoNames) {
  config::JobConfig job;
  job.model.dim = 3;
  job.run.output_dir = dir_ + "/run";
  job.data.corpus = "data/corpus.txt";  // relative to where training ran: dir_
  model::SgnsModel m(model::sgnsOptionsFromConfig(job.model, 2), 1);
  saveJobCheckpoint(dir_, job, m, {"apple", "pear"}, 3);
  fs::create_directories(dir_ + "/data");
  fs::create_directories(dir_ + "/elsewhere");
  write("data/corpus.txt", "apple pear\n");
  write("data/items.tsv", "id\tkey\tname\tcategory\napple\tSKU-1\tRed apple\tfruit\n");
  for (const std::string cwd : {dir_, dir_ + "/elsewhere"}) {
    testing::CommandOptions in;
    in.cwd = cwd;
    const auto r = testing::runCommand({testing::binPath("ringtrain"), "export", "--checkpoint",
                                        dir_ + "/run/checkpoints", "-o", dir_ + "/out" + std::to_string(cwd.size()) +
                                        "/vectors.txt"}, in);
    ASSERT_TRUE(r.ok()) << r.err;
    const bool found = cwd == dir_;
    EXPECT_EQ(fs::exists(dir_ + "/out" + std::to_string(cwd.size()) + "/items.tsv"), found) << cwd;
    EXPECT_EQ(r.err.find("data/corpus.txt (the corpus of the job that wrote the checkpoint) is not found from " + cwd +
                         ", nor its items: no items.tsv is put beside the vectors") != std::string::npos, !found)
        << r.err;
  }
  // Given another job file whose items are found: its names go beside the vectors, said to be right only
  // if both jobs trained on the same items (numbered items match any corpus's file).
  fs::create_directories(dir_ + "/shop");
  write("shop/items.tsv", "id\tkey\tname\tcategory\napple\tK1\tShop apple\tshop\n");
  write("shop.yaml", "data:\n  corpus: " + dir_ + "/shop/corpus.txt\n");
  testing::CommandOptions elsewhere;
  elsewhere.cwd = dir_ + "/elsewhere";
  const auto other_job = testing::runCommand({testing::binPath("ringtrain"), "export", dir_ + "/shop.yaml", "--checkpoint",
                                              dir_ + "/run/checkpoints", "-o", dir_ + "/shop-out/vectors.txt"},
                                             elsewhere);
  ASSERT_TRUE(other_job.ok()) << other_job.err;
  EXPECT_TRUE(fs::exists(dir_ + "/shop-out/items.tsv"));
  EXPECT_NE(other_job.err.find("data/items.tsv (the items of the job that wrote the checkpoint) is not found from " +
                               dir_ + "/elsewhere: the names put beside the vectors are this job file's, " + dir_ +
                               "/shop/items.tsv, which are right only if both jobs trained on the same items"),
            std::string::npos)
      << other_job.err;
}

}  // namespace
}  // namespace ringtrain::train
