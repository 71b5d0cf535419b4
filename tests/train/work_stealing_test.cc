// Who trains which pairs of a step while it runs (src/train/work_stealing.h): the claims' sizes, and ranks that
// are threads sharing one buffer, each row of each step taken exactly once and read back as its owner wrote it.
#include "train/work_stealing.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "ringtrain/data/batch_loader.h"

#include "ddp/thread_group.h"

namespace ringtrain::train {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// The owner's first take leaves two smallest pieces; later takes halve what is left, never below the
// smallest piece nor above what is left.
TEST(WorkStealing, ClaimsLeaveTheEndOfABatchInSmallPieces) {
  EXPECT_EQ(claimSize(1024, 1024, 256, /*owner=*/true), 512);
  EXPECT_EQ(claimSize(512, 1024, 256, true), 256) << "not the owner's first take";
  EXPECT_EQ(claimSize(256, 1024, 256, true), 256);
  EXPECT_EQ(claimSize(1024, 1024, 256, /*owner=*/false), 512) << "a thief at an untouched batch takes half";
  EXPECT_EQ(claimSize(300, 1024, 256, false), 256);
  EXPECT_EQ(claimSize(100, 1024, 256, false), 100) << "never more than is left";
  EXPECT_EQ(claimSize(512, 512, 256, true), 256) << "a batch of two pieces: one each";
  EXPECT_EQ(claimSize(100, 100, 256, true), 100) << "a batch smaller than a piece goes whole";
  EXPECT_EQ(claimSize(1, 1, 1, true), 1);
}

// Batch `step` of `rank`: pair i is (code, code + 1, [code + 2 ...]) with code = 1000 * (100 * step + rank) + i,
// so that any row read back names where it came from.
data::Batch batchOf(int64_t step, int rank, int64_t batch, int64_t negatives) {
  const int64_t base = 1000 * (100 * step + rank);
  const at::Tensor codes = at::arange(base, base + batch, at::TensorOptions().dtype(at::kLong));
  data::Batch b;
  b.center = codes;
  b.context = codes + 1;
  b.negatives = codes.unsqueeze(1) + 2 + at::arange(negatives, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
  return b;
}

// Three ranks, one of them late to every step (until the others have taken some of its rows), over several steps as the trainer runs them (the next step's
// batch offered while this one runs, a barrier between steps standing for the synchronization): every row of
// every batch is trained once, by whoever took it, its pairs are the owner's, and the late rank's rows go to
// the others.
TEST(WorkStealing, EveryRowIsTakenOnceAndReadAsItsOwnerWroteIt) {
  constexpr int kWorld = 3, kLate = 2;
  constexpr int64_t kBatch = 200, kNegatives = 3, kMinPairs = 16, kSteps = 12;
  const at::Tensor buffer = WorkStealing::initialBuffer(kWorld, kBatch, kNegatives);
  std::vector<std::vector<int>> trained(kSteps, std::vector<int>(kWorld * kBatch, 0));
  std::vector<int64_t> late_rows_taken_by_others(kSteps, 0);
  std::mutex mu;
  std::atomic<int> arrived{0};
  std::atomic<bool> failed{false};  // a rank that failed leaves the others' meetings
  auto barrier = [&](int generation) {  // the kWorld threads' generation-th meeting
    arrived.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (arrived.load() < kWorld * generation && !failed.load()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "meeting " << generation << ": a rank never came";
        failed = true;
      }
      std::this_thread::yield();
    }
  };
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kWorld; ++rank) {
    ranks.emplace_back([&, rank] {
      WorkStealing stealing(rank, kWorld, kBatch, kNegatives, kMinPairs, buffer);
      stealing.publish(0, batchOf(0, rank, kBatch, kNegatives));
      barrier(1);
      for (int64_t step = 0; step < kSteps && !failed; ++step) {
        if (step + 1 < kSteps) stealing.publish(step + 1, batchOf(step + 1, rank, kBatch, kNegatives));
        if (rank == kLate) {  // late until the others have taken some of its rows (or 10 s: then they never do)
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          while (!failed) {
            {
              std::lock_guard<std::mutex> lock(mu);
              if (late_rows_taken_by_others[step] > 0) break;
            }
            if (std::chrono::steady_clock::now() > deadline) break;
            std::this_thread::yield();
          }
        }
        while (std::optional<Chunk> chunk = stealing.claim(step)) {
          const ChunkPairs p = stealing.pairs(step, *chunk);
          const int64_t first = 1000 * (100 * step + chunk->owner) + chunk->begin;
          const bool as_written =
              p.center.size(0) == chunk->count &&
              at::equal(p.center, at::arange(first, first + chunk->count, at::TensorOptions().dtype(at::kLong))) &&
              at::equal(p.context, p.center + 1) && at::equal(p.negatives.select(1, kNegatives - 1), p.center + 1 + kNegatives);
          if (!as_written) {
            ADD_FAILURE() << "rank " << rank << " read rows [" << chunk->begin << ", +" << chunk->count << ") of rank "
                          << chunk->owner << "'s batch of step " << step << " as something else";
            failed = true;
          }
          stealing.count(*chunk);
          std::lock_guard<std::mutex> lock(mu);
          for (int64_t i = 0; i < chunk->count; ++i) ++trained[step][chunk->owner * kBatch + chunk->begin + i];
          if (chunk->owner == kLate && rank != kLate) late_rows_taken_by_others[step] += chunk->count;
        }
        stealing.finish(step);
        barrier(static_cast<int>(step) + 2);
      }
    });
  }
  for (auto& t : ranks) t.join();
  ASSERT_FALSE(failed.load());
  for (int64_t step = 0; step < kSteps; ++step) {
    for (int64_t row = 0; row < kWorld * kBatch; ++row) {
      ASSERT_EQ(trained[step][row], 1) << "step " << step << ", rank " << row / kBatch << "'s row " << row % kBatch;
    }
    EXPECT_GT(late_rows_taken_by_others[step], 0) << "step " << step << ": nobody took the late rank's rows";
  }
}

// A slot is written again two steps later: refused, naming the rank, while a rank has not finished reading
// that step (a synchronization that did not wait for every rank).
TEST(WorkStealing, ABatchStillReadIsNotOverwritten) {
  const at::Tensor buffer = WorkStealing::initialBuffer(2, 64, 2);
  WorkStealing rank0(0, 2, 64, 2, 8, buffer), rank1(1, 2, 64, 2, 8, buffer);
  rank0.publish(4, batchOf(4, 0, 64, 2));  // a run resumed at step 4
  rank0.publish(5, batchOf(5, 0, 64, 2));
  rank0.finish(4);
  EXPECT_THAT([&] { rank0.publish(6, batchOf(6, 0, 64, 2)); },
              ThrowsMessage<Error>(HasSubstr("rank 0 would overwrite its batch of step 4 while rank 1 has not "
                                             "finished reading that step")));
  rank1.finish(4);
  EXPECT_NO_THROW(rank0.publish(6, batchOf(6, 0, 64, 2)));
}

// A chunk's loss weight is its share of a batch, so that the chunks of a step add up to the batch's mean.
TEST(WorkStealing, ChunksAreWeightedByTheirShareOfABatch) {
  WorkStealing stealing(0, 2, 1000, 1, 10, WorkStealing::initialBuffer(2, 1000, 1));
  EXPECT_DOUBLE_EQ(stealing.lossScale(Chunk{1, 0, 250}), 0.25);
  EXPECT_DOUBLE_EQ(stealing.lossScale(Chunk{0, 250, 750}), 0.75);
}

// Nothing is offered before the owner publishes: a claim then finds nothing rather than stale rows.
TEST(WorkStealing, NothingIsTakenBeforeItIsOffered) {
  const at::Tensor buffer = WorkStealing::initialBuffer(2, 64, 2);
  WorkStealing rank0(0, 2, 64, 2, 8, buffer), rank1(1, 2, 64, 2, 8, buffer);
  EXPECT_FALSE(rank0.claim(0).has_value());
  rank1.publish(0, batchOf(0, 1, 64, 2));
  const std::optional<Chunk> chunk = rank0.claim(0);
  ASSERT_TRUE(chunk.has_value());
  EXPECT_EQ(chunk->owner, 1);
  EXPECT_EQ(chunk->count, 32) << "a thief takes half";
  EXPECT_FALSE(rank0.claim(1).has_value()) << "the next step's batches are not offered yet";
}

// Off, saying why, where it cannot work; nothing is mapped then (no collective: a job that asked for it goes on).
TEST(WorkStealing, OffWithoutSharedMemoryOrPeers) {
  testing::ThreadGroup alone(1);
  testing::ThreadCommunicator one(alone, 0, std::chrono::seconds(30));
  WorkStealing single(one, 64, 2, 8, /*enabled=*/true);
  EXPECT_FALSE(single.enabled());
  EXPECT_THAT(single.whyOff(), HasSubstr("one rank"));
  EXPECT_TRUE(WorkStealing(one, 64, 2, 8, /*enabled=*/false).whyOff().empty()) << "not asked for: nothing to say";
  testing::ThreadGroup pair(2);
  testing::runRanks(2, [&](int rank) {
    testing::ThreadCommunicator comm(pair, rank, std::chrono::seconds(30));  // threads: no peer memory
    WorkStealing stealing(comm, 64, 2, 8, /*enabled=*/true);
    EXPECT_FALSE(stealing.enabled());
    EXPECT_THAT(stealing.whyOff(), HasSubstr("cannot map each other's memory"));
  });
}

TEST(WorkStealing, ABatchOfTheWrongShapeIsRefused) {
  WorkStealing stealing(0, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2));
  EXPECT_THROW(stealing.publish(0, batchOf(0, 0, 32, 2)), Error);
  EXPECT_THROW(stealing.publish(0, batchOf(0, 0, 64, 3)), Error);
}

TEST(WorkStealing, TheSlowdownSeamNamesWhatIsWrong) {
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "1:x", 1);
  EXPECT_THROW(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)), ConfigError);
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "1:3x", 1);
  EXPECT_THROW(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)), ConfigError);
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "1:1e300", 1);  // a sleep that would overflow
  EXPECT_THROW(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)), ConfigError);
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "1:2:-1", 1);
  EXPECT_THROW(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)), ConfigError);
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "5:2", 1);
  EXPECT_THROW(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)), ConfigError);
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "1:3", 1);
  EXPECT_DOUBLE_EQ(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)).slowdown(), 3.0);
  EXPECT_DOUBLE_EQ(WorkStealing(0, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)).slowdown(), 1.0);
  ::setenv("RINGTRAIN_STEAL_SLOWDOWN", "1:1:50", 1);
  EXPECT_DOUBLE_EQ(WorkStealing(1, 2, 64, 2, 8, WorkStealing::initialBuffer(2, 64, 2)).lateMillis(), 50.0);
  ::unsetenv("RINGTRAIN_STEAL_SLOWDOWN");
}

}  // namespace
}  // namespace ringtrain::train
