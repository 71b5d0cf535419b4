#include "train/run_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "ringtrain/core/file_target.h"

namespace ringtrain::train {
namespace {

using ::testing::HasSubstr;

// A log step's record: its loss, and 1,000 pairs/s per step number.
StepRecord logged(int64_t step, double loss) {
  StepRecord r;
  r.step = step;
  r.has_loss = true;
  r.loss = loss;
  r.pairs_per_second = 1000.0 * static_cast<double>(step);
  return r;
}

class MetricsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("run-log-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& text) {
    const std::string path = (dir_ / "metrics.jsonl").string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  std::filesystem::path dir_;
};

const std::string kThreeSteps = "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n{\"step\":3,\"loss\":0.3}\n";

// A metrics file that cannot take the records (a full disk; /dev/full here) is a failure naming it, which
// the trainer stops every rank on: the run used to end "successfully" with its records cut short.
TEST_F(MetricsFileTest, AFailedWriteIsAFailureNamingTheFile) {
  RunLog log(true, "/dev/full", 10, 0);
  StepRecord r;
  r.step = 1;
  r.pairs = 1024;
  r.step_ms = 2.0;
  r.has_loss = true;
  r.loss = 0.5;
  EXPECT_TRUE(log.failure().empty());
  log.record(r);
  EXPECT_EQ(log.failure(), "/dev/full: cannot write the metrics (No space left on device); records are missing from it");
}

// Every line's pairs_per_s is its own step's (pairs over step_ms), logged step or not: it used to be 0.0
// on the steps between log lines.
TEST_F(MetricsFileTest, EveryStepCarriesItsOwnRate) {
  const std::string path = (dir_ / "rates.jsonl").string();
  {
    RunLog log(true, path, 10, 0);
    StepRecord plain;
    plain.step = 1;
    plain.pairs = 1024;
    plain.step_ms = 2.0;
    log.record(plain);
    StepRecord logged = plain;
    logged.step = 2;
    logged.step_ms = 4.0;
    logged.has_loss = true;
    logged.loss = 0.5;
    logged.pairs_per_second = 123.0;  // the window's, for the progress line and the picture
    log.record(logged);
  }
  const std::string text = read(path);
  EXPECT_THAT(text, HasSubstr("{\"step\":1,\"epoch\":0,\"lr\":0,\"pairs_per_s\":512000.0,\"step_ms\":2.000"));
  EXPECT_THAT(text, HasSubstr("\"loss\":0.500000,\"window_pairs_per_s\":123.0,\"lr\":0,\"pairs_per_s\":256000.0,"
                              "\"step_ms\":4.000"));
}

// An evaluation during the run is a record of its step: after that step's line, and dropped with it when a
// resumed run trains the step again.
TEST_F(MetricsFileTest, AnEvaluationIsARecordOfItsStep) {
  const std::string path = (dir_ / "eval.jsonl").string();
  {
    RunLog log(true, path, 10, 0);
    for (int64_t step : {1, 2}) {
      StepRecord r;
      r.step = step;
      log.record(r);
      if (step == 2) log.evaluation(2, "\"hr@10\":0.250000,\"queries\":8");
    }
  }
  const std::string text = read(path);
  EXPECT_THAT(text, HasSubstr("\n{\"step\":2,\"eval\":{\"hr@10\":0.250000,\"queries\":8}}\n"));
  EXPECT_LT(text.find("{\"step\":2,\"epoch\""), text.find("\"eval\"")) << text;
  keepMetricsUpTo(path, 1);
  EXPECT_THAT(read(path), ::testing::Not(HasSubstr("eval")));
}

// A resumed run trains the steps after its checkpoint again: their old records go, the earlier ones stay.
TEST_F(MetricsFileTest, AResumedRunKeepsTheRecordsUpToItsCheckpoint) {
  const std::string path = write(kThreeSteps);
  keepMetricsUpTo(path, 2);
  EXPECT_EQ(read(path), "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n");
  keepMetricsUpTo(path, 5);  // nothing beyond: untouched
  EXPECT_EQ(read(path), "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n");
}

// The picture of a resumed run covers the whole run: the logged records before its checkpoint (from the file)
// and its own; it used to plot only the steps the last attempt trained.
TEST_F(MetricsFileTest, AResumedRunPlotsTheStepsBeforeItsCheckpointToo) {
  const std::string path = (dir_ / "resumed.jsonl").string();
  {
    RunLog first(true, path, 6, 0);
    for (int64_t step = 1; step <= 4; ++step) first.record(logged(step, 1.0 / static_cast<double>(step)));
  }
  const std::string png = (dir_ / "training.png").string();
  {
    RunLog resumed(true, path, 6, 2);  // from the checkpoint of step 2: steps 3 and 4 are trained again
    resumed.record(logged(3, 0.3));
    resumed.plot(png);  // without gnuplot it warns; the data file is written first either way
  }
  EXPECT_EQ(read(png + ".dat"), "1 1.000000 1000.0\n2 0.500000 2000.0\n3 0.300000 3000.0\n");
}

// A finished run resumed trains nothing and evaluates its last step again: that record replaces the earlier
// attempt's (there used to be two of the step); a periodic evaluation of an earlier step stays.
TEST_F(MetricsFileTest, AFinishedRunResumedReplacesItsLastEvaluation) {
  const std::string path = (dir_ / "finished.jsonl").string();
  {
    RunLog first(true, path, 4, 0);
    for (int64_t step = 1; step <= 4; ++step) {
      StepRecord r;
      r.step = step;
      first.record(r);
      if (step == 2) first.evaluation(2, "\"hr@10\":0.1");
    }
    first.evaluation(4, "\"hr@10\":0.2");
  }
  {
    RunLog resumed(true, path, 4, 4);
    resumed.evaluation(4, "\"hr@10\":0.3");
  }
  const std::string text = read(path);
  EXPECT_THAT(text, HasSubstr("{\"step\":2,\"eval\":{\"hr@10\":0.1}}\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("\"hr@10\":0.2")));
  EXPECT_THAT(text, HasSubstr("{\"step\":4,\"eval\":{\"hr@10\":0.3}}\n"));
  EXPECT_THAT(text, HasSubstr("{\"step\":4,\"epoch\"")) << "the step's own record stays";
  EXPECT_LT(text.find("{\"step\":4,\"epoch\""), text.find("\"hr@10\":0.3")) << "after its step, as before: " << text;
}

// Where the record cannot be replaced (the file writable but no temporary file possible beside it: a directory
// not writable to the user; here a directory in the temporary file's place, which stops root too), the new one
// is appended after the old, with a warning, and the run goes on (it used to stop there with exit 2).
TEST_F(MetricsFileTest, AnEvaluationThatCannotReplaceTheOldOneIsAppended) {
  const std::string path = (dir_ / "m.jsonl").string();
  {
    RunLog first(true, path, 1, 0);
    StepRecord r;
    r.step = 1;
    first.record(r);
    first.evaluation(1, "\"hr@10\":0.2");
  }
  std::filesystem::create_directories(tempPathFor(path));  // writeFileAtomically's
  {
    RunLog resumed(true, path, 1, 1);
    resumed.evaluation(1, "\"hr@10\":0.3");
    EXPECT_TRUE(resumed.failure().empty()) << resumed.failure();
  }
  const std::string text = read(path);
  EXPECT_THAT(text, HasSubstr("\"hr@10\":0.2"));
  EXPECT_THAT(text, HasSubstr("\"hr@10\":0.3"));
}

TEST_F(MetricsFileTest, AFreshStartBeginsTheFileAnewAndATornLastLineIsDropped) {
  const std::string path = write(kThreeSteps + "{\"step\":4,\"lo");
  keepMetricsUpTo(path, 3);
  EXPECT_EQ(read(path), kThreeSteps);
  keepMetricsUpTo(path, 0);
  EXPECT_EQ(read(path), "");
  keepMetricsUpTo((dir_ / "absent.jsonl").string(), 0);  // no file yet: nothing to do
  EXPECT_FALSE(std::filesystem::exists(dir_ / "absent.jsonl"));
}

// log.metrics_file naming somebody's file (the corpus, the job's YAML) is refused, the file left as it was.
TEST_F(MetricsFileTest, AFileThatHoldsAnythingElseIsRefusedAndLeftAlone) {
  const std::string corpus = "a b c\nd e f\n";
  const std::string path = write(corpus);
  EXPECT_THAT([&] { keepMetricsUpTo(path, 0); },
              ::testing::ThrowsMessage<DataError>(HasSubstr("metrics.jsonl:1: not a ringtrain metrics record")));
  EXPECT_EQ(read(path), corpus);
  EXPECT_THAT([&] { checkMetricsFile(path); },
              ::testing::ThrowsMessage<DataError>(HasSubstr("metrics.jsonl:1: not a ringtrain metrics record")));
}

// The first record of a file begun anew names its job; another job given that file (log.metrics_file) is
// refused, naming both (QA: a fresh start emptied another run's metrics without a word). A file written
// before records named their job, or by this job, passes; a resumed run keeps the first record's job.
TEST_F(MetricsFileTest, AnotherJobsMetricsFileIsRefused) {
  const std::string path = (dir_ / "metrics.jsonl").string();
  {
    RunLog log(true, path, 10, 0, "job-a");
    StepRecord r;
    r.step = 1;
    log.record(r);
    r.step = 2;
    log.record(r);
  }
  const std::string written = read(path);
  EXPECT_EQ(std::count(written.begin(), written.end(), '\n'), 2) << written;
  EXPECT_NE(written.find("\"sparse_bytes\":0,\"job\":\"job-a\"}\n{\"step\":2,"), std::string::npos) << written;
  EXPECT_EQ(written.find("job-a", written.find('\n')), std::string::npos) << "only the first record names the job";
  checkMetricsFile(path, "job-a");
  checkMetricsFile(path);
  EXPECT_THAT([&] { checkMetricsFile(path, "job-b"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr(path + " holds the metrics of another job (config hash "
                                                              "job-a; this job's is job-b)")));
  EXPECT_EQ(read(path), written);
  {
    RunLog resumed(true, path, 10, 2, "job-a");
    StepRecord r;
    r.step = 3;
    resumed.record(r);
  }
  const std::string after = read(path);
  EXPECT_EQ(after.rfind("job-a"), written.find("job-a")) << after;
  const std::string older = write("{\"step\":1,\"loss\":0.5}\n");
  checkMetricsFile(older, "job-b");
}

// Lines torn by a crash in the middle of the file (older versions appended after one) are dropped, not
// taken for somebody else's file.
TEST_F(MetricsFileTest, ATornLineAfterTheFirstRecordIsDropped) {
  const std::string path = write("{\"step\":1,\"loss\":0.5}\n{\"st{\"step\":2,\"loss\":0.4}\n{\"step\":3,\"loss\":0.3}\n");
  checkMetricsFile(path);
  keepMetricsUpTo(path, 3);
  EXPECT_EQ(read(path), "{\"step\":1,\"loss\":0.5}\n{\"step\":3,\"loss\":0.3}\n");
}

// A resumed run whose file lost the records of its last steps before the checkpoint (a full disk), or lost
// the file, says which steps have none.
TEST_F(MetricsFileTest, RecordsThatEndBeforeTheCheckpointAreSaid) {
  const std::string path = write(kThreeSteps);
  ::testing::internal::CaptureStderr();
  keepMetricsUpTo(path, 5);
  keepMetricsUpTo((dir_ / "absent.jsonl").string(), 4);
  keepMetricsUpTo(path, 3);  // whole: nothing to say
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(said, HasSubstr("its records end at step 3, before the checkpoint's step 5: steps 4 to 5 have none"));
  EXPECT_THAT(said, HasSubstr("absent.jsonl: not there, so it holds no records of the 4 step(s) before the checkpoint"));
  EXPECT_EQ(said.find("have none"), said.rfind("have none")) << "the whole file was said to lack steps: " << said;
  EXPECT_EQ(read(path), kThreeSteps);
}

// A FIFO that nobody reads is refused at once, naming it: opening it would wait for a reader for ever (and
// the other ranks would time out naming rank 0). With a reader, the records go to it.
TEST_F(MetricsFileTest, AFifoWithoutAReaderIsRefused) {
  const std::string fifo = (dir_ / "unread.fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT([&] { RunLog log(true, fifo, 10, 0); },
              ::testing::ThrowsMessage<DataError>(HasSubstr("unread.fifo: cannot open the metrics file for writing: it "
                                                            "is a FIFO that nobody reads")));
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  {
    RunLog log(true, fifo, 10, 0);
    StepRecord r;
    r.step = 1;
    r.has_loss = true;
    log.record(r);
    EXPECT_TRUE(log.failure().empty()) << log.failure();
  }
  char buf[256] = {};
  EXPECT_GT(::read(reader, buf, sizeof buf - 1), 0);
  EXPECT_THAT(std::string(buf), HasSubstr("{\"step\":1,"));
  ::close(reader);
}

// training.png is written as the run's other files are: through a link to its target; a FIFO or a directory
// in its place is left as it is, with a warning, and no temporary file is left behind.
TEST_F(MetricsFileTest, ThePlotIsWrittenThroughALinkAndNeverOverAFifoOrADirectory) {
  const std::string path = (dir_ / "plot.jsonl").string();
  RunLog log(true, path, 4, 0);
  for (int64_t step = 1; step <= 3; ++step) log.record(logged(step, 1.0 / static_cast<double>(step)));
  const auto leftovers = [&](const std::filesystem::path& dir) {
    std::string found;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.find(".tmp.") != std::string::npos || name.find(".gp") != std::string::npos) found += name + " ";
    }
    return found;
  };
  std::filesystem::create_directories(dir_ / "fifo");
  const std::string fifo = (dir_ / "fifo" / "training.png").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(log.plot(fifo), "");
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
  EXPECT_EQ(leftovers(dir_ / "fifo"), "");
  std::filesystem::create_directories(dir_ / "dir" / "training.png");
  EXPECT_EQ(log.plot((dir_ / "dir" / "training.png").string()), "");
  EXPECT_TRUE(std::filesystem::is_directory(dir_ / "dir" / "training.png"));
  EXPECT_EQ(leftovers(dir_ / "dir"), "");
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "no gnuplot: the link case needs a plot";
  std::filesystem::create_directories(dir_ / "link");
  std::filesystem::create_directories(dir_ / "pictures");
  const auto link = dir_ / "link" / "training.png";
  std::filesystem::create_symlink(dir_ / "pictures" / "run.png", link);
  EXPECT_EQ(log.plot(link.string()), link.string());
  EXPECT_TRUE(std::filesystem::is_symlink(link)) << "the link was replaced by a file";
  EXPECT_GT(std::filesystem::file_size(dir_ / "pictures" / "run.png"), 0u);
  EXPECT_EQ(leftovers(dir_ / "link") + leftovers(dir_ / "pictures"), "");
}

// A run directory may be named anything: the plot reaches gnuplot without a shell, its paths quoted for it.
TEST_F(MetricsFileTest, ThePlotIsWrittenWhereverItsDirectoryIsNamed) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "no gnuplot";
  const auto dir = dir_ / "it's a \"run\" $(touch pwned); `x`";
  std::filesystem::create_directories(dir);
  RunLog log(true, (dir / "metrics.jsonl").string(), 4, 0);
  for (int64_t step = 1; step <= 3; ++step) log.record(logged(step, 1.0 / static_cast<double>(step)));
  const std::string png = (dir / "training.png").string();
  EXPECT_EQ(log.plot(png), png);
  EXPECT_GT(std::filesystem::file_size(png), 0u);
  EXPECT_FALSE(std::filesystem::exists("pwned"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "pwned"));
}

// A FIFO or a terminal is only ever appended to: never read back (that would block), never rewritten.
TEST_F(MetricsFileTest, AFileThatIsNotRegularIsLeftAlone) {
  const std::string fifo = (dir_ / "metrics.fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  checkMetricsFile(fifo);
  keepMetricsUpTo(fifo, 0);
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
}

}  // namespace
}  // namespace ringtrain::train
