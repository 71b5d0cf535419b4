#include "serve/deferred_release.h"

#include "ringtrain/core/allocator.h"
#include "serve/lower_priority.h"

namespace ringtrain::serve {

// How much nicer than the server the releasing thread runs.
constexpr int kReleaseNiceIncrement = 10;

DeferredRelease::DeferredRelease() : thread_([this] { run(); }) {}

DeferredRelease::~DeferredRelease() {
  {
    std::lock_guard<std::mutex> lock(queue_->mu);
    queue_->stopped = true;
  }
  queue_->cv.notify_all();
  thread_.join();
}

void DeferredRelease::Queue::retire(std::shared_ptr<const void> object) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!stopped) {
      retired.push_back(std::move(object));
      cv.notify_one();
      return;
    }
  }
  object.reset();  // no thread to hand it to any more: destroyed here, outside the lock
}

size_t DeferredRelease::pending() const {
  std::lock_guard<std::mutex> lock(queue_->mu);
  return queue_->retired.size();
}

void DeferredRelease::run() {
  lowerThisThreadPriority(kReleaseNiceIncrement);
  Queue& q = *queue_;
  std::unique_lock<std::mutex> lock(q.mu);
  while (true) {
    q.cv.wait(lock, [&] { return q.stopped || !q.retired.empty(); });
    if (q.retired.empty()) return;  // stopped, nothing left
    std::shared_ptr<const void> object = std::move(q.retired.front());
    q.retired.pop_front();
    lock.unlock();
    object.reset();  // the expensive part, outside the lock
    lock.lock();
    if (q.retired.empty()) {  // once per burst of releases: a trim walks the whole heap
      lock.unlock();
      releaseFreedMemory();
      lock.lock();
    }
  }
}

}  // namespace ringtrain::serve
