// A rank's output pump: a log file that cannot be made (a full disk, no inodes) costs the copy, not the job.
#include "output_pump.h"

#include <gtest/gtest.h>

#include <string>

namespace ringtrain::launch {
namespace {

TEST(OutputPump, ALogFileThatCannotBeCreatedIsDoneWithout) {
  Tail tail;
  std::unique_ptr<OutputPump> pump;
  ASSERT_NO_THROW(pump = std::make_unique<OutputPump>(3, consoleOut(), "/nonexistent-ringrun-dir/stdout.log", &tail));
  const std::string line = "still passed on\n";
  pump->feed(line.data(), line.size());
  pump->finish();
  ASSERT_FALSE(tail.empty());
  EXPECT_EQ(tail.back(), "still passed on");
}

}  // namespace
}  // namespace ringtrain::launch
