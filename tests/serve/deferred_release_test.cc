#include "serve/deferred_release.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace ringtrain::serve {
namespace {

// Records where it was destroyed.
struct Witness {
  Witness(std::promise<std::thread::id>* on, std::atomic<int>* count) : destroyed_on(on), destroyed(count) {}
  Witness(const Witness&) = delete;
  std::promise<std::thread::id>* destroyed_on;
  std::atomic<int>* destroyed;
  ~Witness() {
    if (destroyed_on != nullptr) destroyed_on->set_value(std::this_thread::get_id());
    if (destroyed != nullptr) ++*destroyed;
  }
};

TEST(DeferredRelease, TheLastReleaseDestroysOnItsOwnThread) {
  DeferredRelease release;
  std::promise<std::thread::id> destroyed_on;
  auto future = destroyed_on.get_future();
  auto witness = std::make_shared<const Witness>(&destroyed_on, nullptr);
  std::shared_ptr<const Witness> tracked = release.track(std::move(witness));
  std::shared_ptr<const Witness> copy = tracked;
  tracked.reset();
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);  // still referenced
  copy.reset();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_NE(future.get(), std::this_thread::get_id());
}

TEST(DeferredRelease, EverythingIsDestroyedByTheEndAndLateReleasesStillWork) {
  std::atomic<int> destroyed{0};
  std::shared_ptr<const Witness> late;
  {
    DeferredRelease release;
    for (int i = 0; i < 100; ++i) {
      release.track(std::make_shared<const Witness>(nullptr, &destroyed));  // dropped at once
    }
    late = release.track(std::make_shared<const Witness>(nullptr, &destroyed));
  }
  EXPECT_EQ(destroyed.load(), 100);
  late.reset();  // after the release thread is gone: destroyed here
  EXPECT_EQ(destroyed.load(), 101);
}

}  // namespace
}  // namespace ringtrain::serve
