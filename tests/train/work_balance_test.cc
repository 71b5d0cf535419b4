// Who trains which pairs of a step (src/train/work_balance.h): the cuts' arithmetic, and the collective that
// moves them over ranks that are threads (tests/ddp/thread_group.h).
#include "train/work_balance.h"

#include <chrono>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"

#include "ddp/thread_group.h"

namespace ringtrain::train {
namespace {

constexpr int64_t kBatch = 1000;
constexpr int64_t kNoEnd = 1 << 30;  // a last step the tests never reach

std::vector<int64_t> shares(const std::vector<int64_t>& cuts) {
  std::vector<int64_t> n;
  for (size_t r = 0; r + 1 < cuts.size(); ++r) n.push_back(cuts[r + 1] - cuts[r]);
  return n;
}

// The cuts after `windows` decisions on ranks of these speeds (pairs per second, constant whatever the share).
std::vector<int64_t> settle(const std::vector<double>& speed, int windows) {
  std::vector<int64_t> cuts = evenCuts(static_cast<int>(speed.size()), kBatch);
  for (int w = 0; w < windows; ++w) {
    std::vector<double> seconds_per_pair;
    for (double s : speed) seconds_per_pair.push_back(1.0 / s);
    cuts = rebalancedCuts(cuts, seconds_per_pair, kBatch);
  }
  return cuts;
}

TEST(WorkBalance, EvenCutsGiveEveryRankItsOwnBatch) {
  EXPECT_EQ(evenCuts(3, kBatch), (std::vector<int64_t>{0, 1000, 2000, 3000}));
  EXPECT_EQ(settle({2.0, 2.0, 2.0, 2.0}, 5), evenCuts(4, kBatch)) << "equal speeds move nothing";
}

TEST(WorkBalance, ASlowerRankGetsFewerPairsUntilTheRanksTakeEqualTime) {
  // Rank 1 runs at 2/3 the others' speed: at equal time it trains 2/3 as many pairs.
  const std::vector<double> speed = {3.0, 2.0, 3.0};
  const std::vector<int64_t> first = settle(speed, 1);
  EXPECT_LT(shares(first)[1], kBatch);
  EXPECT_GT(shares(first)[1], 750) << "one window moves halfway, not all the way";
  const std::vector<int64_t> n = shares(settle(speed, 30));
  EXPECT_NEAR(static_cast<double>(n[1]), 3000.0 * 2 / 8, 2.0);
  EXPECT_NEAR(static_cast<double>(n[0]) / speed[0], static_cast<double>(n[1]) / speed[1], 2.0);
  EXPECT_EQ(n[0] + n[1] + n[2], 3 * kBatch) << "the step's pairs are all trained, once";
}

TEST(WorkBalance, CutsStayWithinTheNeighboursRowsAndEveryRankKeepsAQuarter) {
  // Rank 2 is 100 times slower than the others: its target share lies far below what a rank keeps, and
  // the cuts around it far beyond the rows the loader holds.
  const std::vector<int64_t> cuts = settle({1.0, 1.0, 0.01, 1.0}, 40);
  for (size_t j = 1; j + 1 < cuts.size(); ++j) {
    EXPECT_LE(std::abs(cuts[j] - static_cast<int64_t>(j) * kBatch), kBatch / 2) << "cut " << j;
  }
  for (int64_t n : shares(cuts)) EXPECT_GE(n, kBatch / 4);
  EXPECT_EQ(cuts.front(), 0);
  EXPECT_EQ(cuts.back(), 4 * kBatch);
  EXPECT_EQ(shares(cuts)[2], kBatch / 4) << "the slowest rank is held at the least share";
}

TEST(WorkBalance, ARankWithoutATimingCountsAsTheMedian) {
  const std::vector<int64_t> even = evenCuts(3, kBatch);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(rebalancedCuts(even, {1e-6, 0.0, 1e-6}, kBatch), even);
  EXPECT_EQ(rebalancedCuts(even, {1e-6, nan, 1e-6}, kBatch), even);
  EXPECT_EQ(rebalancedCuts(even, {0.0, 0.0, 0.0}, kBatch), even) << "nobody timed: nothing moves";
}

TEST(WorkBalance, TinyBatchesNeverLeaveARankWithoutPairs) {
  for (int64_t batch : {1, 2, 3, 5}) {
    std::vector<int64_t> cuts = evenCuts(4, batch);
    for (int w = 0; w < 10; ++w) cuts = rebalancedCuts(cuts, {1.0, 1000.0, 1.0, 1e-3}, batch);
    for (int64_t n : shares(cuts)) EXPECT_GE(n, 1) << "batch " << batch;
    EXPECT_EQ(cuts.back(), 4 * batch);
  }
}

// The whole rank side over an in-process communicator: rank 1 says it is 3 times slower (the tests' seam),
// every rank computes the same cuts after each window, and they move only every kBalanceWindow steps.
TEST(WorkBalance, RanksAgreeOnTheCutsEveryWindow) {
  constexpr int kWorld = 3;
  ::setenv("RINGTRAIN_BALANCE_SLOWDOWN", "1:3", 1);
  testing::ThreadGroup group(kWorld);
  std::mutex mu;
  std::vector<std::vector<int64_t>> after_first(kWorld), at_end(kWorld);
  testing::runRanks(kWorld, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(30));
    WorkBalance balance(comm, kBatch, /*enabled=*/true);
    for (int64_t step = 1; step <= 3 * kBalanceWindow; ++step) {
      balance.record(1e-6 * static_cast<double>(balance.count()), balance.count());
      balance.endStep(step, kNoEnd);
      if (step == kBalanceWindow - 1) EXPECT_EQ(balance.cuts(), evenCuts(kWorld, kBatch)) << "moved early";
      std::lock_guard<std::mutex> lock(mu);
      if (step == kBalanceWindow) after_first[rank] = balance.cuts();
      if (step == 3 * kBalanceWindow) at_end[rank] = balance.cuts();
    }
  });
  ::unsetenv("RINGTRAIN_BALANCE_SLOWDOWN");
  for (int r = 1; r < kWorld; ++r) {
    EXPECT_EQ(after_first[r], after_first[0]) << "rank " << r;
    EXPECT_EQ(at_end[r], at_end[0]) << "rank " << r;
  }
  EXPECT_LT(shares(after_first[0])[1], kBatch);
  EXPECT_LT(shares(at_end[0])[1], shares(after_first[0])[1]) << "each window moves further";
}

// A rank descheduled for a few steps of a window (a busy neighbour on the host) is not slower: each rank's
// figure is the median of its steps, and these cuts stay even. Two micro-batches a step add up.
TEST(WorkBalance, AFewSlowStepsAreJitterNotASlowerRank) {
  constexpr int kWorld = 2;
  testing::ThreadGroup group(kWorld);
  std::vector<std::vector<int64_t>> cuts(kWorld);
  testing::runRanks(kWorld, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(30));
    WorkBalance balance(comm, kBatch, /*enabled=*/true);
    for (int64_t step = 1; step <= kBalanceWindow; ++step) {
      const double stall = rank == 1 && step % 4 == 0 ? 100.0 : 1.0;  // steps 4 and 8 of 10
      balance.record(0.5e-6 * stall * static_cast<double>(balance.count()), balance.count() / 2);
      balance.record(0.5e-6 * static_cast<double>(balance.count()), balance.count() - balance.count() / 2);
      balance.endStep(step, kNoEnd);
    }
    cuts[rank] = balance.cuts();
  });
  EXPECT_EQ(cuts[0], evenCuts(kWorld, kBatch));
  EXPECT_EQ(cuts[1], cuts[0]);
}

// What the loader is asked to hold beside a rank's own batch: the neighbours' rows its range takes, plus
// B / 16 each side for the next moves; a batch with them covers the range, the own batch alone only where
// the range took no neighbour's rows.
TEST(WorkBalance, TheLoaderHoldsTheRowsTheRangeTakes) {
  constexpr int kWorld = 3;
  ::setenv("RINGTRAIN_BALANCE_SLOWDOWN", "2:4", 1);
  testing::ThreadGroup group(kWorld);
  std::vector<std::pair<int64_t, int64_t>> held(kWorld), at_start(kWorld);
  std::vector<std::vector<int64_t>> cuts(kWorld);
  std::vector<int> covered(kWorld);
  testing::runRanks(kWorld, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(30));
    WorkBalance balance(comm, kBatch, /*enabled=*/true);
    at_start[rank] = balance.neighbourRowsToHold();
    bool moved = false;
    for (int64_t step = 1; step <= kBalanceWindow; ++step) {
      balance.record(1e-6 * static_cast<double>(balance.count()), balance.count());
      moved = balance.endStep(step, kNoEnd);
    }
    EXPECT_TRUE(moved) << "rank 2 is 4 times slower";
    held[rank] = balance.neighbourRowsToHold();
    cuts[rank] = balance.cuts();
    const int64_t first = rank * kBatch - held[rank].first;
    covered[rank] = balance.covers(first, held[rank].first + kBatch + held[rank].second) &&
                    balance.covers(rank * kBatch, kBatch) == (rank == 2);
  });
  ::unsetenv("RINGTRAIN_BALANCE_SLOWDOWN");
  const int64_t margin = kBatch / 16;
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(at_start[r], std::make_pair(margin, margin)) << "even cuts take no neighbour's row";
    EXPECT_TRUE(covered[r]) << "rank " << r;
  }
  // Rank 2 gave rows to rank 1, and rank 1 to rank 0: each holds what it takes after its own batch; rank 2
  // takes nothing of rank 1's, and its own batch alone covers what it trains.
  ASSERT_EQ(cuts[1], cuts[0]);
  ASSERT_EQ(cuts[2], cuts[0]);
  ASSERT_GT(cuts[0][1], kBatch);
  ASSERT_GT(cuts[0][2], 2 * kBatch);
  EXPECT_EQ(held[0], std::make_pair(margin, cuts[0][1] - kBatch + margin));
  EXPECT_EQ(held[1], std::make_pair(margin, cuts[0][2] - 2 * kBatch + margin));
  EXPECT_EQ(held[2], std::make_pair(margin, margin));
}

TEST(WorkBalance, OffOrAloneKeepsTheOwnBatch) {
  {
    ::setenv("RINGTRAIN_BALANCE_SLOWDOWN", "1:4", 1);
    testing::ThreadGroup group(2);
    std::vector<std::vector<int64_t>> cuts(2);
    testing::runRanks(2, [&](int rank) {
      testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(5));
      WorkBalance off(comm, kBatch, /*enabled=*/false);
      for (int64_t step = 1; step <= 2 * kBalanceWindow; ++step) {
        off.record(1e-6 * static_cast<double>(off.count()), off.count());
        EXPECT_FALSE(off.endStep(step, kNoEnd));
      }
      cuts[rank] = off.cuts();
      EXPECT_FALSE(off.enabled());
      EXPECT_EQ(off.begin(), rank * kBatch);
    });
    ::unsetenv("RINGTRAIN_BALANCE_SLOWDOWN");
    EXPECT_EQ(cuts[0], evenCuts(2, kBatch));
    EXPECT_EQ(cuts[1], cuts[0]);
  }
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, std::chrono::seconds(5));
  WorkBalance alone(comm, kBatch, /*enabled=*/true);
  EXPECT_FALSE(alone.enabled());
  EXPECT_EQ(alone.whyOff(), "one rank has nobody to share its pairs with");
  EXPECT_EQ(alone.begin(), 0);
  EXPECT_EQ(alone.count(), kBatch);
  EXPECT_EQ(alone.lossScale(), 1.0);
}

TEST(WorkBalance, ABatchOfOnePairIsNotCutAndSaysSo) {
  testing::ThreadGroup group(2);
  std::vector<std::string> why(2);
  testing::runRanks(2, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(5));
    WorkBalance one(comm, 1, /*enabled=*/true);
    EXPECT_FALSE(one.enabled());
    why[rank] = one.whyOff();
    WorkBalance off(comm, 1, /*enabled=*/false);
    EXPECT_EQ(off.whyOff(), "") << "not asked for: nothing to say";
  });
  EXPECT_EQ(why[0], "a batch of one pair cannot be cut");
}

// A checkpoint keeps the cuts as text; a resumed run takes them back when they fit its job (as many ranks,
// the same batch, within the bounds), and otherwise starts even, as does a run with balance off.
TEST(WorkBalance, CutsKeptInACheckpointComeBackWhenTheyFitTheJob) {
  constexpr int kWorld = 3;
  testing::ThreadGroup group(kWorld);
  std::vector<std::vector<int64_t>> restored(kWorld);
  testing::runRanks(kWorld, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(5));
    WorkBalance balance(comm, kBatch, /*enabled=*/true);
    EXPECT_EQ(balance.encodeCuts(), "0 1000 2000 3000");
    EXPECT_TRUE(balance.restoreCuts("0 1400 2300 3000"));
    EXPECT_EQ(balance.encodeCuts(), "0 1400 2300 3000");
    restored[rank] = balance.cuts();
    for (const char* misfit : {"0 1000 2000",           // fewer ranks
                               "0 1000 2000 4000",      // another batch
                               "0 1600 2000 3000",      // a cut past half a batch from its own
                               "0 1400 1500 3000",      // a rank under a quarter of a batch
                               "0 1000 x 3000", ""}) {  // not numbers
      EXPECT_FALSE(balance.restoreCuts(misfit)) << misfit;
      EXPECT_EQ(balance.cuts(), restored[rank]) << "a misfit changed the cuts: " << misfit;
    }
    WorkBalance off(comm, kBatch, /*enabled=*/false);
    EXPECT_FALSE(off.restoreCuts("0 1400 2300 3000"));
    EXPECT_EQ(off.cuts(), evenCuts(kWorld, kBatch));
  });
  EXPECT_EQ(restored[0], (std::vector<int64_t>{0, 1400, 2300, 3000}));
  EXPECT_EQ(shares(restored[2]), (std::vector<int64_t>{1400, 900, 700}));
}

// Decisions fall on the job's steps 10, 20, ...: a run resumed at step 15 decides at step 20 (on the 5 steps
// it timed), as the uninterrupted run did; and none follows the last step, so the shares the job ends with
// are the ones its last step trained.
TEST(WorkBalance, DecisionsFallOnTheJobsStepsAndNoneAfterTheLast) {
  constexpr int kWorld = 2;
  ::setenv("RINGTRAIN_BALANCE_SLOWDOWN", "1:3", 1);
  testing::ThreadGroup group(kWorld);
  std::vector<std::vector<int64_t>> moved_at(kWorld);
  std::vector<std::vector<int64_t>> cuts_at_30(kWorld);
  testing::runRanks(kWorld, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(30));
    WorkBalance balance(comm, kBatch, /*enabled=*/true);
    for (int64_t step = 16; step <= 30; ++step) {  // resumed after step 15; the job ends at step 30
      balance.record(1e-6 * static_cast<double>(balance.count()), balance.count());
      if (balance.endStep(step, 30)) moved_at[rank].push_back(step);
    }
    cuts_at_30[rank] = balance.cuts();
  });
  ::unsetenv("RINGTRAIN_BALANCE_SLOWDOWN");
  EXPECT_EQ(moved_at[0], (std::vector<int64_t>{20})) << "step 30 is the last: no decision after it";
  EXPECT_EQ(moved_at[1], moved_at[0]);
  EXPECT_EQ(cuts_at_30[1], cuts_at_30[0]);
}

// What each of two ranks says when the test seam holds `value` ("" where it takes it).
std::vector<std::string> refusalsOfSlowdown(const char* value) {
  ::setenv("RINGTRAIN_BALANCE_SLOWDOWN", value, 1);
  testing::ThreadGroup group(2);
  std::vector<std::string> errors(2);
  testing::runRanks(2, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, std::chrono::seconds(5));
    try {
      WorkBalance balance(comm, kBatch, /*enabled=*/true);
    } catch (const ConfigError& e) {
      errors[rank] = e.what();
    }
  });
  ::unsetenv("RINGTRAIN_BALANCE_SLOWDOWN");
  return errors;
}

// An infinite factor would count as the median (not usable), a rank outside the job would slow nobody: both
// would leave a test (or a mistaken real job) silently unslowed.
TEST(WorkBalance, TheSlowdownSeamRefusesWhatWouldSilentlyDoNothing) {
  for (const char* bad : {"1:inf", "1:1e400", "1:nan", "1:0", "1:-2", "x:2", "1", "1:2x"}) {
    EXPECT_THAT(refusalsOfSlowdown(bad)[0], ::testing::HasSubstr("is not RANK:FACTOR")) << bad;
  }
  EXPECT_THAT(refusalsOfSlowdown("5:3")[1], ::testing::HasSubstr("names rank 5 of a job of 2 ranks"));
  EXPECT_EQ(refusalsOfSlowdown("1:3"), (std::vector<std::string>{"", ""}));
}

}  // namespace
}  // namespace ringtrain::train
