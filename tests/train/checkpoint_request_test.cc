// When the ranks look for a checkpoint request between log steps: about once a second of rank 0's training,
// from integers every rank holds alike.
#include "train/checkpoint_request.h"

#include <gtest/gtest.h>

namespace ringtrain::train {
namespace {

TEST(CheckpointRequestSchedule, FirstLooksAfterAFewStepsOfTheRun) {
  const CheckpointRequestSchedule fresh(0);
  EXPECT_FALSE(fresh.due(kFirstRequestLook - 1));
  EXPECT_TRUE(fresh.due(kFirstRequestLook));
  const CheckpointRequestSchedule resumed(500);  // a resumed run counts from its checkpoint's step
  EXPECT_FALSE(resumed.due(500 + kFirstRequestLook - 1));
  EXPECT_TRUE(resumed.due(500 + kFirstRequestLook));
}

TEST(CheckpointRequestSchedule, LooksAboutOnceASecondOfRankZerosSteps) {
  CheckpointRequestSchedule looks(0);
  looks.looked(10, 40);  // 4 ms steps: 250 steps to a second
  EXPECT_EQ(looks.nextLook(), 10 + 250);
  looks.looked(260, 2500);  // 10 ms steps now: 100
  EXPECT_EQ(looks.nextLook(), 360);
  looks.looked(300, 6000);  // a log step came first (the look counts from there): 150 ms steps, 6 steps
  EXPECT_EQ(looks.nextLook(), 306);
}

TEST(CheckpointRequestSchedule, StaysWithinItsBoundsForVerySlowAndVeryFastSteps) {
  CheckpointRequestSchedule looks(0);
  looks.looked(10, 100000);  // 10 s per step: every step
  EXPECT_EQ(looks.nextLook(), 11);
  looks.looked(11, 0);  // under a millisecond counts as one: 1000 steps, not a division by zero
  EXPECT_EQ(looks.nextLook(), 1011);
  looks.looked(1011, 0);
  EXPECT_EQ(looks.nextLook(), 1011 + kMaxStepsBetweenLooks);
}

}  // namespace
}  // namespace ringtrain::train
