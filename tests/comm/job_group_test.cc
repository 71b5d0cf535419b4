// JobGroup with ranks as threads, meeting as processes started by hand (RANK/WORLD_SIZE) would: rank 0
// hosts the store on a loopback port and the others connect to it.
#include "ringtrain/comm/job_group.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "testing/command.h"
#include "testing/rank_threads.h"

namespace ringtrain::comm {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

dist::ProcessInfo byHand(int rank, int world, int port) {
  dist::ProcessInfo p;
  p.rank = rank;
  p.world_size = world;
  p.local_rank = rank;
  p.local_world_size = world;
  p.master_port = port;
  p.launcher = "env";
  return p;
}

TEST(JobGroup, RanksMeetAndTheirCommunicatorWorks) {
  const int world = 3;
  const int port = testing::freeLoopbackPort();
  const auto results = testing::runRankThreads(world, [&](int rank) {
    JobGroup job(testing::testCommOptions(20.0), byHand(rank, world, port));
    EXPECT_EQ(job.rank(), rank);
    EXPECT_EQ(job.size(), world);
    EXPECT_EQ(job.comm().rank(), rank);
    EXPECT_EQ(job.comm().size(), world);
    const auto all = job.comm().allgatherBytes({static_cast<uint8_t>(10 + rank)});
    ASSERT_EQ(all.size(), static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) EXPECT_EQ(all[static_cast<size_t>(r)], std::vector<uint8_t>{static_cast<uint8_t>(10 + r)});
  });
  testing::expectAllOk(results);
}

// Rank 0 hosts the store: it stays until every rank has left, or a rank still closing would lose it.
TEST(JobGroup, RankZeroLeavesOnlyAfterEveryOtherRank) {
  const int world = 2;
  const int port = testing::freeLoopbackPort();
  std::atomic<int64_t> rank1_left_ns{0}, rank0_left_ns{0};
  const auto results = testing::runRankThreads(world, [&](int rank) {
    {
      JobGroup job(testing::testCommOptions(20.0), byHand(rank, world, port));
      job.comm().barrier();
      if (rank == 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
        rank1_left_ns = Clock::now().time_since_epoch().count();
      }
    }
    if (rank == 0) rank0_left_ns = Clock::now().time_since_epoch().count();
  });
  testing::expectAllOk(results);
  EXPECT_GT(rank1_left_ns.load(), 0);
  EXPECT_GE(rank0_left_ns.load(), rank1_left_ns.load()) << "rank 0 dropped the store while rank 1 was still in the job";
}

// finish(): the other ranks return at once; rank 0 returns once all have said they are done, and fails,
// naming the rank, when one never does (stopped or hung after its last collective), so that the launcher
// stops the job instead of waiting for that rank forever.
TEST(JobGroup, FinishNamesARankThatNeverFinishes) {
  const int world = 3;
  for (const bool all_finish : {true, false}) {
    SCOPED_TRACE(all_finish ? "every rank finishes" : "rank 2 never finishes");
    const int port = testing::freeLoopbackPort();
    std::atomic<bool> rank0_done{false};
    std::atomic<int64_t> finish_ms{-1};
    const auto results = testing::runRankThreads(world, [&](int rank) {
      JobGroup job(testing::testCommOptions(2.0), byHand(rank, world, port));
      job.comm().barrier();
      if (rank == 2 && !all_finish) {
        // Stays in the job without finishing until rank 0 has given up on it.
        for (int i = 0; i < 200 && !rank0_done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        throw Error("rank 2 leaves unfinished");  // unwinding: no wait at its own leave
      }
      const auto start = Clock::now();
      try {
        job.finish();
      } catch (...) {
        rank0_done = true;
        throw;
      }
      if (rank == 0) {
        finish_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
        rank0_done = true;
      }
    });
    EXPECT_TRUE(results[1].ok()) << results[1].error;
    if (all_finish) {
      testing::expectAllOk(results);  // rank 0 did not throw: it saw every rank finish within the 2 s
      EXPECT_GE(finish_ms.load(), 0);
    } else {
      EXPECT_EQ(results[0].error_type, "TimeoutError") << results[0].error;
      EXPECT_THAT(results[0].error, HasSubstr("rank(s) 2 did not finish within comm.timeout_s 2 s"));
    }
  }
}

// Groups made one after another on one port: rank 1 is quick to make its next group while rank 0 still
// hosts the last one's store. It used to reach that store, meet the last group's keys there, and lose the
// store under it; it now leaves only once rank 0 has stopped hosting, and each group meets its own.
TEST(JobGroup, GroupsMadeOneAfterAnotherEachMeetTheirOwn) {
  const int world = 2;
  const int port = testing::freeLoopbackPort();
  const auto results = testing::runRankThreads(world, [&](int rank) {
    for (int round = 0; round < 3; ++round) {
      JobGroup job(testing::testCommOptions(20.0), byHand(rank, world, port));
      const auto all = job.comm().allgatherBytes({static_cast<uint8_t>(10 * round + rank)});
      ASSERT_EQ(all.size(), static_cast<size_t>(world));
      for (int r = 0; r < world; ++r) {
        EXPECT_EQ(all[static_cast<size_t>(r)], std::vector<uint8_t>{static_cast<uint8_t>(10 * round + r)});
      }
      if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 1 leaves first
    }
  });
  testing::expectAllOk(results);
}

TEST(JobGroup, ARankThatNeverComesIsNamedWithinTheTimeout) {
  const int world = 3;
  const int port = testing::freeLoopbackPort();
  const auto started = Clock::now();
  const auto results = testing::runRankThreads(2, [&](int rank) {  // rank 2 never starts
    JobGroup job(testing::testCommOptions(1.5), byHand(rank, world, port));
  });
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(20));
  EXPECT_EQ(results[0].error_type, "TimeoutError") << results[0].error;
  EXPECT_THAT(results[0].error, HasSubstr("rank(s) 2 of 3 did not reach the job's store within comm.timeout_s 1.5 s"));
  // Rank 1 times out the same way, unless rank 0, which hosts the store, gave up first and took it away.
  if (results[1].error_type == "TimeoutError") {
    EXPECT_THAT(results[1].error, HasSubstr("rank(s) 2 of 3 did not reach the job's store"));
  } else {
    EXPECT_EQ(results[1].error_type, "CommError") << results[1].error;
    EXPECT_THAT(results[1].error, HasSubstr("rank 0 hosts the job's store, and it went away while rank 1 waited"));
  }
}

TEST(JobGroup, RanksOnAnotherBackendAreRefused) {
  const int world = 2;
  const int port = testing::freeLoopbackPort();
  const auto results = testing::runRankThreads(world, [&](int rank) {
    config::CommOptions options = testing::testCommOptions(2.0);
    if (rank == 1) options.backend = "mpi";
    JobGroup job(options, byHand(rank, world, port));
  });
  EXPECT_EQ(results[1].error_type, "ConfigError") << results[1].error;
  EXPECT_THAT(results[1].error, HasSubstr("rank 1 runs comm.backend mpi and rank 0 gloo"));
  EXPECT_FALSE(results[0].ok()) << "rank 0 cannot build a group without rank 1";
}

// Ranks told different world sizes (a typo in one launch line) are refused at once, each naming both
// sizes, instead of each waiting out the timeout for ranks that are not coming.
TEST(JobGroup, RanksToldDifferentWorldSizesAreRefused) {
  for (const auto& [world0, world1] : {std::pair{2, 3}, std::pair{3, 2}}) {  // rank 0 told less, then more
    const int port = testing::freeLoopbackPort();
    const auto started = Clock::now();
    const auto results = testing::runRankThreads(2, [&, w0 = world0, w1 = world1](int rank) {
      JobGroup job(testing::testCommOptions(10.0), byHand(rank, rank == 0 ? w0 : w1, port));
    });
    EXPECT_LT(Clock::now() - started, std::chrono::seconds(5)) << world0 << " " << world1;
    EXPECT_EQ(results[0].error_type, "ConfigError") << results[0].error;
    EXPECT_THAT(results[0].error, HasSubstr("rank 0 was started with a world size of " + std::to_string(world0) +
                                            " and rank 1 with " + std::to_string(world1)));
    EXPECT_EQ(results[1].error_type, "ConfigError") << results[1].error;
    EXPECT_THAT(results[1].error, HasSubstr("rank 1 was started with a world size of " + std::to_string(world1) +
                                            " and rank 0 with " + std::to_string(world0)));
  }
}

// The ring's settings shape its messages: ranks that differ would fail inside a collective. Refused at the
// meeting, naming both.
TEST(JobGroup, RanksWithOtherRingSettingsAreRefused) {
  const int port = testing::freeLoopbackPort();
  const auto results = testing::runRankThreads(2, [&](int rank) {
    config::CommOptions options = testing::testCommOptions(10.0);
    if (rank == 1) {
      options.ring_segment_kb = 64;
      options.same_host_copy = !options.same_host_copy;
    }
    JobGroup job(options, byHand(rank, 2, port));
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].error_type, "ConfigError") << results[r].error;
    EXPECT_THAT(results[r].error, HasSubstr("every rank must use the same comm settings"));
  }
  // Each setting that differs is named by its key, with both ranks' values.
  const bool copy = testing::testCommOptions(10.0).same_host_copy;
  EXPECT_THAT(results[1].error, HasSubstr(fmt::format("comm.ring_segment_kb is 64 on rank 1 and {} on rank 0; "
                                                      "comm.same_host_copy is {} on rank 1 and {} on rank 0",
                                                      testing::testCommOptions(10.0).ring_segment_kb, !copy, copy)));
}

// A rank other than 0 that cannot reach rank 0's store says whose store it is and what may be wrong.
TEST(JobGroup, ARankThatCannotReachRankZerosStoreSaysWhy) {
  const int port = testing::freeLoopbackPort();  // nobody hosts it: rank 0 never starts
  const auto results = testing::runRankThreads(1, [&](int) {
    JobGroup job(testing::testCommOptions(1.0), byHand(1, 2, port));
  });
  EXPECT_EQ(results[0].error_type, "CommError") << results[0].error;
  EXPECT_THAT(results[0].error, HasSubstr("rank 1 cannot reach the job's store at 127.0.0.1:" + std::to_string(port) +
                                          ", which rank 0 hosts: rank 0 did not start"));
}

// The backend is compared as each rank resolves it: auto is gloo for host tensors.
TEST(JobGroup, AutoAndGlooAgreeOnHostTensors) {
  const int port = testing::freeLoopbackPort();
  const auto results = testing::runRankThreads(2, [&](int rank) {
    config::CommOptions options = testing::testCommOptions(10.0);
    options.backend = rank == 0 ? "auto" : "gloo";
    JobGroup job(options, byHand(rank, 2, port));
    job.comm().barrier();
  });
  testing::expectAllOk(results);
}

}  // namespace
}  // namespace ringtrain::comm
