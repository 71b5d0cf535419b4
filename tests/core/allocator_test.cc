#include "ringtrain/core/allocator.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace ringtrain {
namespace {

#if defined(__GLIBC__)
TEST(Allocator, KeepsFreedMemoryOnGlibc) { EXPECT_TRUE(keepFreedMemoryInProcess()); }
#endif

TEST(Allocator, EnvironmentKeepsTheDefaults) {
  ASSERT_EQ(setenv("RINGTRAIN_MALLOC_DEFAULTS", "1", 1), 0);
  EXPECT_FALSE(keepFreedMemoryInProcess());
  unsetenv("RINGTRAIN_MALLOC_DEFAULTS");
}

}  // namespace
}  // namespace ringtrain
