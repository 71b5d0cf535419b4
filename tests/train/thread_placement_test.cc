// run.pin_compute_thread: a bound rank's compute thread keeps one CPU in training; its other threads share
// the rest, wherever they start.
#include "train/thread_placement.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>
#include <vector>

#include "ringtrain/core/cpu_affinity.h"

namespace ringtrain::train {
namespace {

// Runs `body` on a thread of its own, so that the masks it sets never outlive it. RINGTRAIN_CPUS is set
// for the body's span as ringrun sets it for a bound rank (the value is only a record; the mask is read).
template <typename Body>
void asBoundRank(Body body) {
  ASSERT_EQ(setenv("RINGTRAIN_CPUS", "any", 1), 0);
  std::thread t(body);
  t.join();
  unsetenv("RINGTRAIN_CPUS");
}

TEST(ThreadPlacement, TheComputeThreadKeepsTheFirstCpuInTrainingAndLaterThreadsGetTheRest) {
  asBoundRank([] {
    const std::vector<int> all = core::threadCpus();
    if (all.size() < 2) GTEST_SKIP() << "needs 2 CPUs to split";
    const std::vector<int> rest(all.begin() + 1, all.end());
    config::JobConfig job;
    std::vector<int> started_in_setup, started_in_training, started_in_training_moved;
    {
      ThreadPlacement placement(job);
      ASSERT_TRUE(placement.active()) << placement.description();
      EXPECT_EQ(placement.description(), "compute thread on CPU " + std::to_string(all[0]) + ", other threads on " +
                                             core::cpuListText(rest));
      // Before training, the compute thread sits with the helpers: what it starts (Gloo, the loader) starts there.
      EXPECT_EQ(core::threadCpus(), rest);
      std::thread([&] { started_in_setup = core::threadCpus(); }).join();
      placement.enterTraining();
      EXPECT_EQ(core::threadCpus(), std::vector<int>{all[0]});
      // A helper started during backward (the sparse rows' helper) moves off the compute CPU.
      std::thread([&] {
        started_in_training = core::threadCpus();
        core::moveToAuxiliaryCpus();
        started_in_training_moved = core::threadCpus();
      }).join();
      placement.leaveTraining();
      EXPECT_EQ(core::threadCpus(), all);
      placement.enterTraining();  // the destructor undoes it, as on an error inside the loop
    }
    EXPECT_EQ(started_in_setup, rest);
    EXPECT_EQ(started_in_training, std::vector<int>{all[0]});
    EXPECT_EQ(started_in_training_moved, rest);
    EXPECT_EQ(core::threadCpus(), all);
    EXPECT_TRUE(core::auxiliaryCpus().empty());
  });
}

TEST(ThreadPlacement, NothingMovesWithoutTheLaunchersCpusTheKeyOrOneThread) {
  auto expectInactive = [](const config::JobConfig& job, const std::string& why) {
    const std::vector<int> before = core::threadCpus();
    ThreadPlacement placement(job);
    EXPECT_FALSE(placement.active());
    EXPECT_NE(placement.description().find(why), std::string::npos) << placement.description();
    placement.enterTraining();
    EXPECT_EQ(core::threadCpus(), before);
    EXPECT_TRUE(core::auxiliaryCpus().empty());
  };
  config::JobConfig job;
  std::thread([&] { expectInactive(job, "no CPUs of its own"); }).join();  // RINGTRAIN_CPUS unset
  asBoundRank([&] {
    config::JobConfig off = job;
    off.run.pin_compute_thread = false;
    expectInactive(off, "run.pin_compute_thread is false");
    config::JobConfig threads = job;
    threads.run.threads = 2;
    expectInactive(threads, "run.threads is not 1");
    const std::vector<int> all = core::threadCpus();
    ASSERT_TRUE(core::setThreadCpus({all[0]}));
    expectInactive(job, "one CPU");
  });
}

}  // namespace
}  // namespace ringtrain::train
