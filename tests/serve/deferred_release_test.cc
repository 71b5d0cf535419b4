#include "serve/deferred_release.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "ringtrain/core/allocator.h"

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

long residentKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// The server keeps freed memory in the process (keepFreedMemoryInProcess), so a retired model's memory
// stayed resident until trimmed: each reload used to add a model's worth.
// (It sets the server's malloc settings for this process: ctest runs each test in a process of its own.)
TEST(DeferredRelease, TheMemoryOfWhatItDestroysGoesBackToTheSystem) {
  if (!keepFreedMemoryInProcess()) GTEST_SKIP() << "RINGTRAIN_MALLOC_DEFAULTS is set, or not glibc's malloc";
  DeferredRelease release;
  // Blocks under glibc's 32 MiB mmap threshold, as a model's arrays mostly are: they come from the heap.
  using Blocks = std::vector<std::vector<char>>;
  auto big = std::make_shared<Blocks>();
  for (int i = 0; i < 8; ++i) big->emplace_back(size_t{12} << 20, char{1});  // 96 MiB, resident
  const long held = residentKiB();
  std::shared_ptr<const Blocks> tracked = release.track(std::shared_ptr<const Blocks>(std::move(big)));
  tracked.reset();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  long now = residentKiB();
  while (held - now < 64 * 1024 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    now = residentKiB();
  }
  EXPECT_GE(held - now, 64 * 1024) << "resident " << held << " KiB with it, " << now << " KiB after";
}

}  // namespace
}  // namespace ringtrain::serve
