// Releasing objects that are expensive to destroy away from the threads that happen to drop them.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace ringtrain::serve {

// A model that stops serving dies when its last reference goes, and that is often a scoring or request
// thread finishing a job: freeing a 100,000-item model takes 5-7 ms, which that thread's requests would
// wait for. track() wraps a pointer so that its last release only hands the object to this class's own
// thread, which runs at a lower priority and destroys it there.
//
// Once the queue is empty after destroying something, the thread gives the freed memory back to the system
// (releaseFreedMemory): the server keeps freed memory in the process for its request buffers
// (keepFreedMemoryInProcess), so each reload used to leave a model's worth of it resident (a 200,000 x 64
// model: 330 MB at start, 710 MB after 6 reloads). A trim takes each malloc arena's lock in turn while it
// walks it (milliseconds for a model's heap); a request thread allocating from the same arena meanwhile
// waits that long, once per reload.
//
// Thread-safe. The destructor destroys what is still queued and joins the thread; a tracked pointer
// released after that is destroyed by the releasing thread, as if untracked.
class DeferredRelease {
 public:
  DeferredRelease();
  ~DeferredRelease();
  DeferredRelease(const DeferredRelease&) = delete;
  DeferredRelease& operator=(const DeferredRelease&) = delete;

  template <typename T>
  std::shared_ptr<const T> track(std::shared_ptr<const T> object) {
    const T* raw = object.get();
    // The returned pointer aliases `object`; its deleter hands `object` (the last reference) over.
    return std::shared_ptr<const T>(raw, [queue = queue_, held = std::shared_ptr<const void>(std::move(object))](
                                             const T*) mutable { queue->retire(std::move(held)); });
  }

  // Objects released and not destroyed yet (for tests).
  size_t pending() const;

 private:
  struct Queue {
    void retire(std::shared_ptr<const void> object);
    mutable std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<const void>> retired;  // guarded by mu
    bool stopped = false;                              // guarded by mu
  };
  void run();

  std::shared_ptr<Queue> queue_ = std::make_shared<Queue>();
  std::thread thread_;
};

}  // namespace ringtrain::serve
