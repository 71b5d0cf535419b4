#include "ringtrain/data/batch_loader.h"

#include <atomic>
#include <future>
#include <thread>

#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include "data_testing.h"
#include "ringtrain/core/error.h"
#include "testing/captured_log.h"

namespace ringtrain::data {
namespace {

using namespace std::chrono_literals;
using testing_helpers::finishesWithin;

struct Data {
  std::shared_ptr<const Corpus> corpus;
  std::shared_ptr<const CorpusSplit> split;
};

Data makeData(int lines = 400) {
  std::vector<std::vector<std::string>> text;
  for (int l = 0; l < lines; ++l) {
    std::vector<std::string> line;
    const int len = 3 + (l * 13) % 9;
    for (int i = 0; i < len; ++i) line.push_back(std::to_string((l * 31 + i * i * 7) % 300));
    text.push_back(line);
  }
  Data d;
  d.corpus = Corpus::fromLines(text);
  d.split = std::make_shared<CorpusSplit>(*d.corpus, SplitOptions{0.1, 42, EvalProtocol::kWindow, 1});
  return d;
}

config::JobConfig job(int workers, int depth = 4) {
  config::JobConfig j;
  j.data.batch_size = 32;
  j.data.negatives = 3;
  j.data.window = 2;
  j.run.epochs = 2;
  j.loader.workers = workers;
  j.loader.queue_depth = depth;
  return j;
}

std::vector<Batch> drain(BatchLoader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

bool sameBatch(const Batch& a, const Batch& b) {
  return a.epoch == b.epoch && a.step == b.step && at::equal(a.center, b.center) && at::equal(a.context, b.context) &&
         at::equal(a.negatives, b.negatives);
}

TEST(Loader, SameBatchesWhateverTheThreadCount) {
  Data d = makeData();
  BatchLoader l0(d.corpus, d.split, job(0), 0, 1);
  const std::vector<Batch> ref = drain(l0);
  ASSERT_EQ(static_cast<int64_t>(ref.size()), 2 * l0.stepsPerEpoch());
  ASSERT_GE(l0.stepsPerEpoch(), 5);
  for (int workers : {1, 4}) {
    BatchLoader l(d.corpus, d.split, job(workers, 3), 0, 1);
    const std::vector<Batch> got = drain(l);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(sameBatch(got[i], ref[i])) << workers << " workers, batch " << i;
    EXPECT_EQ(l.stats().batches, static_cast<int64_t>(ref.size()));
  }
  // Shapes, ranges and positions.
  const Batch& b = ref.back();
  EXPECT_EQ(b.center.sizes(), (std::vector<int64_t>{32}));
  EXPECT_EQ(b.negatives.sizes(), (std::vector<int64_t>{32, 3}));
  EXPECT_EQ(b.center.scalar_type(), at::kLong);
  EXPECT_GE(b.negatives.min().item<int64_t>(), 0);
  EXPECT_LT(b.negatives.max().item<int64_t>(), d.corpus->vocab().size());
  EXPECT_EQ(ref[1].step, 1);
  EXPECT_EQ(ref[l0.stepsPerEpoch()].epoch, 1);
  EXPECT_EQ(ref[l0.stepsPerEpoch()].step, 0);
  EXPECT_FALSE(at::equal(ref[0].center, ref[l0.stepsPerEpoch()].center));  // reshuffled epoch
}

TEST(Loader, ResumesAtAPosition) {
  Data d = makeData();
  BatchLoader full(d.corpus, d.split, job(2), 0, 1);
  const std::vector<Batch> ref = drain(full);
  const int64_t steps = full.stepsPerEpoch();
  BatchLoader resumed(d.corpus, d.split, job(2), 0, 1, LoaderPosition{1, 2});
  EXPECT_EQ(resumed.position().epoch, 1);
  EXPECT_EQ(resumed.position().step, 2);
  auto b = resumed.next();
  ASSERT_TRUE(b);
  EXPECT_TRUE(sameBatch(*b, ref[steps + 2]));
  EXPECT_EQ(resumed.position().step, 3);
  EXPECT_THROW(BatchLoader(d.corpus, d.split, job(0), 0, 1, LoaderPosition{0, steps + 1}), DataError);
}

TEST(Loader, RanksGetEqualStepsAndDifferentData) {
  Data d = makeData();
  std::vector<int64_t> steps;
  std::vector<Batch> firsts;
  for (int r = 0; r < 3; ++r) {
    BatchLoader l(d.corpus, d.split, job(1), r, 3);
    steps.push_back(l.stepsPerEpoch());
    firsts.push_back(*l.next());
  }
  EXPECT_EQ(steps[0], steps[1]);
  EXPECT_EQ(steps[1], steps[2]);
  EXPECT_FALSE(at::equal(firsts[0].center, firsts[1].center));
}

// ddp.balance: a rank's batch also holds the last half of rank r-1's batch and the first half of rank r+1's,
// row for row (pairs and negatives) what those ranks build themselves; first_row places them in the step.
TEST(Loader, BalancedBatchesHoldTheNeighboursRowsAsTheyBuildThem) {
  Data d = makeData();
  constexpr int kWorld = 3;
  std::vector<Batch> own;
  for (int r = 0; r < kWorld; ++r) own.push_back(BatchLoader(d.corpus, d.split, job(0), r, kWorld).build(1, 2));
  config::JobConfig balanced = job(2);
  balanced.ddp.balance = true;
  const int64_t batch = balanced.data.batch_size, half = neighbourRows(batch);
  // The step's rows laid end to end, as the ranks build them alone.
  const at::Tensor center = at::cat({own[0].center, own[1].center, own[2].center});
  const at::Tensor context = at::cat({own[0].context, own[1].context, own[2].context});
  const at::Tensor negatives = at::cat({own[0].negatives, own[1].negatives, own[2].negatives});
  for (int r = 0; r < kWorld; ++r) {
    BatchLoader loader(d.corpus, d.split, balanced, r, kWorld);
    const Batch b = loader.build(1, 2);
    const int64_t first = r * batch - (r > 0 ? half : 0);
    const int64_t rows = batch + (r > 0 ? half : 0) + (r + 1 < kWorld ? half : 0);
    EXPECT_EQ(b.first_row, first) << "rank " << r;
    ASSERT_EQ(b.center.size(0), rows) << "rank " << r;
    EXPECT_TRUE(at::equal(b.center, center.narrow(0, first, rows))) << "rank " << r;
    EXPECT_TRUE(at::equal(b.context, context.narrow(0, first, rows))) << "rank " << r;
    EXPECT_TRUE(at::equal(b.negatives, negatives.narrow(0, first, rows))) << "rank " << r;
    EXPECT_EQ(loader.stats().bytes_per_batch, rows * (2 + balanced.data.negatives) * 8);
    // Through the queue, the same rows.
    for (int i = 0; i < 3; ++i) {
      const Batch queued = *loader.next();
      const Batch direct = loader.build(queued.epoch, queued.step);
      EXPECT_TRUE(sameBatch(queued, direct));
      EXPECT_EQ(queued.first_row, first);
    }
  }
}

// The trainer narrows what a batch holds of its neighbours to what its range needs: later batches hold
// that many rows each side, and an explicit build holds what it is asked, the same rows either way.
TEST(Loader, HeldNeighbourRowsAreTheOnesAskedFor) {
  Data d = makeData();
  config::JobConfig balanced = job(0);
  balanced.ddp.balance = true;
  const int64_t batch = balanced.data.batch_size;
  BatchLoader loader(d.corpus, d.split, balanced, 1, 3);
  const Batch full = loader.build(0, 1);
  const int64_t half = neighbourRows(batch);
  ASSERT_EQ(full.first_row, batch - half);
  loader.holdNeighbourRows(3, 0);
  const Batch narrow = *loader.next();  // batch (0, 0), built on this thread with 0 workers
  EXPECT_EQ(narrow.first_row, batch - 3);
  EXPECT_EQ(narrow.center.size(0), batch + 3);
  const Batch wide = loader.build(0, 0, 1000, 5);  // clamped to half a batch before
  EXPECT_EQ(wide.first_row, batch - half);
  ASSERT_EQ(wide.center.size(0), half + batch + 5);
  EXPECT_TRUE(at::equal(narrow.center, wide.center.narrow(0, half - 3, batch + 3)));
  EXPECT_TRUE(at::equal(narrow.negatives, wide.negatives.narrow(0, half - 3, batch + 3)));
  const Batch rows_of_0 = loader.build(0, 1, 7, 0);
  EXPECT_TRUE(at::equal(rows_of_0.context, full.context.narrow(0, half - 7, batch + 7)));
  BatchLoader off(d.corpus, d.split, job(0), 1, 3);
  const Batch own = off.build(0, 1, 5, 5);
  EXPECT_EQ(own.first_row, batch) << "without ddp.balance a batch holds no neighbour's rows";
  EXPECT_EQ(own.center.size(0), batch);
}

TEST(Loader, MaxStepsBoundsTheRun) {
  Data d = makeData();
  config::JobConfig j = job(2);
  j.run.max_steps = 3;
  j.ddp.accumulation_steps = 2;
  BatchLoader l(d.corpus, d.split, j, 0, 1);
  EXPECT_EQ(drain(l).size(), 6u);
}

TEST(Loader, ShutdownWithAFullQueue) {
  Data d = makeData();
  auto loader = std::make_unique<BatchLoader>(d.corpus, d.split, job(3, 2), 0, 1);
  // Let the workers fill the queue and block on it.
  std::this_thread::sleep_for(200ms);
  BatchLoader* raw = loader.release();
  EXPECT_TRUE(finishesWithin([raw] { delete raw; }, 10s));
}

TEST(Loader, StopWakesABlockedConsumer) {
  Data d = makeData();
  LoaderHooks hooks;
  hooks.before_build = [](int64_t, int64_t step, const std::atomic<bool>& stopping) {
    if (step < 1) return;
    while (!stopping.load()) std::this_thread::sleep_for(5ms);  // a stalled source
  };
  for (int workers : {0, 2}) {
    BatchLoader loader(d.corpus, d.split, job(workers), 0, 1, {}, hooks);
    ASSERT_TRUE(loader.next());
    std::atomic<int> result{-1};
    std::thread consumer([&] { result = loader.next().has_value() ? 1 : 0; });
    std::this_thread::sleep_for(150ms);
    EXPECT_EQ(result.load(), -1) << "next() should be blocked";
    EXPECT_TRUE(finishesWithin([&] { loader.stop(); }, 10s)) << workers << " workers";
    EXPECT_TRUE(finishesWithin([&] { consumer.join(); }, 10s));
    EXPECT_EQ(result.load(), 0);
    EXPECT_FALSE(loader.next());
  }
}

TEST(Loader, RequestStopAloneIsNoticed) {
  Data d = makeData();
  LoaderHooks hooks;
  hooks.before_build = [](int64_t, int64_t step, const std::atomic<bool>& stopping) {
    while (step >= 1 && !stopping.load()) std::this_thread::sleep_for(5ms);
  };
  BatchLoader loader(d.corpus, d.split, job(2), 0, 1, {}, hooks);
  ASSERT_TRUE(loader.next());
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    loader.requestStop();  // what a signal handler may call
  });
  bool returned = finishesWithin([&] { EXPECT_FALSE(loader.next()); }, 10s);
  stopper.join();
  EXPECT_TRUE(returned);
}

TEST(Loader, WorkerErrorReachesTheConsumerInOrder) {
  Data d = makeData();
  LoaderHooks hooks;
  hooks.before_build = [](int64_t epoch, int64_t step, const std::atomic<bool>&) {
    if (epoch == 0 && step == 2) throw DataError("corpus.txt:17: injected failure");
  };
  for (int workers : {0, 3}) {
    BatchLoader loader(d.corpus, d.split, job(workers), 0, 1, {}, hooks);
    ASSERT_TRUE(loader.next());
    ASSERT_TRUE(loader.next());
    try {
      loader.next();
      ADD_FAILURE() << "expected the worker's DataError";
    } catch (const DataError& e) {
      EXPECT_STREQ(e.what(), "corpus.txt:17: injected failure");
    }
    EXPECT_THROW(loader.next(), DataError);  // stays failed
  }
}

// A worker wedged in build() (deaf to stopping): next() gives up with a TimeoutError, and the loader's
// destruction during that error's unwinding leaves the stuck worker behind instead of joining it forever.
// The worker keeps the loader's state (and so the corpus) until it wakes, and frees it on its way out.
TEST(Loader, AStuckWorkerIsReportedAndLeftBehindNotJoinedForever) {
  Data d = makeData();
  LoaderHooks hooks;
  hooks.batch_timeout = 300ms;
  auto release = std::make_shared<std::promise<void>>();
  hooks.before_build = [stuck = release->get_future().share()](int64_t epoch, int64_t step,
                                                               const std::atomic<bool>&) {
    if (epoch == 0 && step == 0) stuck.wait();
  };
  const bool ended = finishesWithin(
      [&] {
        try {
          BatchLoader loader(d.corpus, d.split, job(1), 0, 1, {}, hooks);
          loader.next();
          ADD_FAILURE() << "no timeout";
        } catch (const TimeoutError& e) {
          EXPECT_NE(std::string(e.what()).find("a worker is stuck"), std::string::npos) << e.what();
        }
      },
      20s);
  ASSERT_TRUE(ended) << "the loader's destruction joined its stuck worker";
  hooks = {};  // the test's copy of the hook: only the left-behind state holds one now
  EXPECT_GT(d.corpus.use_count(), 1) << "the loader's state was freed under its stuck worker";
  release->set_value();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (d.corpus.use_count() > 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(d.corpus.use_count(), 1) << "the woken worker did not end and free the loader's state";
}

// Every rank takes as many steps an epoch as the rank with the fewest pairs: rank 0 says so when that leaves
// most pairs out (one long line among short ones), and says nothing for even shares.
TEST(Loader, RankZeroWarnsWhenUnevenSharesLeaveMostPairsOut) {
  const auto warningsOf = [](const std::vector<std::vector<std::string>>& text, int rank) {
    Data d;
    d.corpus = Corpus::fromLines(text);
    d.split = std::make_shared<CorpusSplit>(*d.corpus, SplitOptions{0.0, 42, EvalProtocol::kWindow, 1});
    config::JobConfig j = job(0);
    j.data.batch_size = 2;
    testing::CapturedLog logged;
    { BatchLoader loader(d.corpus, d.split, j, rank, 2); }  // its threads end before the log is read
    return logged.text();
  };
  std::vector<std::vector<std::string>> uneven;
  std::vector<std::string> long_line;
  for (int i = 0; i < 200; ++i) long_line.push_back("t" + std::to_string(i));
  uneven.push_back(long_line);
  for (int l = 0; l < 9; ++l) uneven.push_back({"a" + std::to_string(l), "b" + std::to_string(l)});
  const std::string said = warningsOf(uneven, 0);
  EXPECT_NE(said.find("the ranks' shares of the training pairs are uneven"), std::string::npos) << said;
  EXPECT_NE(said.find("of the pairs are left out of each epoch"), std::string::npos) << said;
  EXPECT_EQ(warningsOf(uneven, 1).find("uneven"), std::string::npos) << "only rank 0 says it";
  std::vector<std::vector<std::string>> even;
  for (int l = 0; l < 20; ++l) even.push_back({"a" + std::to_string(l), "b" + std::to_string(l), "c"});
  EXPECT_EQ(warningsOf(even, 0).find("uneven"), std::string::npos);
}

TEST(Loader, StatsReportTheMemoryBound) {
  Data d = makeData();
  BatchLoader loader(d.corpus, d.split, job(2, 5), 0, 1);
  ASSERT_TRUE(loader.next());
  const LoaderStats s = loader.stats();
  EXPECT_EQ(s.bytes_per_batch, 32 * (2 + 3) * 8);
  EXPECT_EQ(s.max_batches_held, 5);
  EXPECT_EQ(s.pairs, 32);
  EXPECT_GE(s.wait_seconds, 0.0);
}

// A batch larger than the pairs a small corpus gives names data.subsample when subsampling dropped pairs
// (word2vec's default drops most of a small corpus's): not only "more data".
TEST(Loader, TooFewPairsForABatchNamesSubsamplingWhenItDroppedSome) {
  const Data d = makeData(20);
  config::JobConfig j = job(0);
  j.data.batch_size = 100000;
  for (const double subsample : {1e-3, 0.0}) {
    j.data.subsample = subsample;
    try {
      BatchLoader loader(d.corpus, d.split, j, 0, 1);
      ADD_FAILURE() << "a batch larger than the corpus was taken";
    } catch (const DataError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("fewer than one batch"), std::string::npos) << what;
      EXPECT_EQ(what.find("data.subsample 0.001 dropped some of its items' pairs: 0 keeps them all") != std::string::npos,
                subsample > 0) << what;
    }
  }
}

}  // namespace
}  // namespace ringtrain::data
