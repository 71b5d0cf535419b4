#include "serve/lower_priority.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

namespace ringtrain::serve {
namespace {

TEST(LowerPriority, WorkRunsNicerOnAnotherThreadAndTheCallerKeepsItsNice) {
  const int before = currentThreadNice();
  int inside = -100;
  std::thread::id worker;
  runWithLowerPriority(10, [&] {
    inside = currentThreadNice();
    worker = std::this_thread::get_id();
  });
  EXPECT_EQ(inside, std::min(19, before + 10));
  EXPECT_NE(worker, std::this_thread::get_id());
  EXPECT_EQ(currentThreadNice(), before);
}

TEST(LowerPriority, NiceIsCappedAt19) {
  int inside = -100;
  runWithLowerPriority(100, [&] { inside = currentThreadNice(); });
  EXPECT_EQ(inside, 19);
}

TEST(LowerPriority, AnExceptionReachesTheCaller) {
  EXPECT_THROW(runWithLowerPriority(5, [] { throw std::runtime_error("parse error"); }), std::runtime_error);
}

}  // namespace
}  // namespace ringtrain::serve
