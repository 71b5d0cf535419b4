// The helper thread behind the sparse sync's overlap with backward: jobs run in index order whatever order
// they are given in, close() says how many ran and stops the rest, and a job's error stops the ones after it.
#include "ddp/ordered_jobs.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ringtrain::ddp::detail {
namespace {

class Recorder {
 public:
  std::function<void()> job(int index) {
    return [this, index] {
      std::lock_guard<std::mutex> lock(mu_);
      order_.push_back(index);
    };
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }

 private:
  std::mutex mu_;
  std::vector<int> order_;
};

// Waits (up to 10 s) until `done` holds: for a job that may still be running on the helper.
template <typename Predicate>
bool eventually(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(OrderedJobs, RunsJobsInIndexOrderWhateverOrderTheyAreGivenIn) {
  OrderedJobs jobs;
  Recorder rec;
  jobs.give(2, 4, rec.job(2));
  jobs.give(1, 4, rec.job(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(rec.order().empty()) << "job 0 was not given: nothing may run";
  jobs.give(0, 4, rec.job(0));
  ASSERT_TRUE(eventually([&] { return rec.order().size() == 3; }));
  jobs.give(3, 4, rec.job(3));
  EXPECT_EQ(jobs.close(), 4u);
  EXPECT_EQ(rec.order(), (std::vector<int>{0, 1, 2, 3}));
}

TEST(OrderedJobs, CloseStopsAtTheFirstJobNotGivenAndTheNextStepStartsAfresh) {
  OrderedJobs jobs;
  Recorder rec;
  jobs.give(0, 3, rec.job(0));
  jobs.give(2, 3, rec.job(2));  // waits for job 1, which never comes this step
  ASSERT_TRUE(eventually([&] { return rec.order().size() == 1; }));
  EXPECT_EQ(jobs.close(), 1u) << "job 2 must be left to the caller";
  EXPECT_EQ(rec.order(), (std::vector<int>{0}));
  // The next step: job 2 of the last one is gone; job 0 may be given again.
  jobs.give(0, 3, rec.job(10));
  jobs.give(1, 3, rec.job(11));
  ASSERT_TRUE(eventually([&] { return rec.order().size() == 3; }));
  EXPECT_EQ(jobs.close(), 2u);
  EXPECT_EQ(rec.order(), (std::vector<int>{0, 10, 11}));
  EXPECT_EQ(jobs.close(), 0u) << "a step with nothing given";
}

TEST(OrderedJobs, AJobsErrorReachesCloseAndNoLaterJobRuns) {
  OrderedJobs jobs;
  Recorder rec;
  std::atomic<bool> failed{false};
  jobs.give(0, 3, [&] {
    failed = true;
    throw std::runtime_error("table 0 is broken");
  });
  jobs.give(1, 3, rec.job(1));
  jobs.give(2, 3, rec.job(2));
  ASSERT_TRUE(eventually([&] { return failed.load(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  try {
    jobs.close();
    FAIL() << "close() must rethrow the job's error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "table 0 is broken");
  }
  EXPECT_TRUE(rec.order().empty());
  jobs.give(0, 3, rec.job(0));  // the helper still serves the next step
  ASSERT_TRUE(eventually([&] { return rec.order().size() == 1; }));
  EXPECT_EQ(jobs.close(), 1u);
}

// What the helper has not started when the step ends, close() runs on the caller's thread, in order: which
// jobs ran never depends on how far the helper got.
TEST(OrderedJobs, CloseRunsTheGivenJobsTheHelperDidNotReach) {
  OrderedJobs jobs;
  Recorder rec;
  std::atomic<bool> started{false};
  std::vector<std::thread::id> ran_on(3);
  jobs.give(2, 4, [&] { ran_on[2] = std::this_thread::get_id(); rec.job(2)(); });
  jobs.give(1, 4, [&] { ran_on[1] = std::this_thread::get_id(); rec.job(1)(); });
  jobs.give(0, 4, [&] {
    ran_on[0] = std::this_thread::get_id();
    started = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // close() comes meanwhile
    rec.job(0)();
  });
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  EXPECT_EQ(jobs.close(), 3u) << "job 3 was never given";
  EXPECT_EQ(rec.order(), (std::vector<int>{0, 1, 2}));
  EXPECT_NE(ran_on[0], std::this_thread::get_id());
  EXPECT_EQ(ran_on[1], std::this_thread::get_id());
  EXPECT_EQ(ran_on[2], std::this_thread::get_id());
}

TEST(OrderedJobs, CloseWaitsForTheJobInProgress) {
  OrderedJobs jobs;
  std::atomic<bool> started{false}, finished{false};
  jobs.give(0, 1, [&] {
    started = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    finished = true;
  });
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  EXPECT_EQ(jobs.close(), 1u);
  EXPECT_TRUE(finished.load());
}

TEST(OrderedJobs, GivingAJobTwiceInOneStepIsAnError) {
  OrderedJobs jobs;
  Recorder rec;
  jobs.give(1, 2, rec.job(1));
  EXPECT_THROW(jobs.give(1, 2, rec.job(1)), std::exception);
  jobs.give(0, 2, rec.job(0));
  ASSERT_TRUE(eventually([&] { return rec.order().size() == 2; }));
  EXPECT_THROW(jobs.give(0, 2, rec.job(0)), std::exception) << "job 0 already ran this step";
  EXPECT_EQ(jobs.close(), 2u);
}

}  // namespace
}  // namespace ringtrain::ddp::detail
