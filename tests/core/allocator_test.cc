#include "ringtrain/core/allocator.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace ringtrain {
namespace {

// (Under a sanitizer malloc is the sanitizer's, and glibc's is left alone.)
#if defined(__GLIBC__) && !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
TEST(Allocator, KeepsFreedMemoryOnGlibc) { EXPECT_TRUE(keepFreedMemoryInProcess()); }
#endif

TEST(Allocator, EnvironmentKeepsTheDefaults) {
  ASSERT_EQ(setenv("RINGTRAIN_MALLOC_DEFAULTS", "1", 1), 0);
  EXPECT_FALSE(keepFreedMemoryInProcess());
  unsetenv("RINGTRAIN_MALLOC_DEFAULTS");
}

}  // namespace
}  // namespace ringtrain
