#include "ddp/ordered_jobs.h"

#include <utility>

#include "ringtrain/core/error.h"

namespace ringtrain::ddp::detail {

OrderedJobs::OrderedJobs() : thread_([this] { run(); }) {}

OrderedJobs::~OrderedJobs() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OrderedJobs::give(size_t index, size_t count, std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) {  // a new step
      jobs_.clear();
      next_ = 0;
      closed_ = false;
    }
    if (jobs_.size() != count) {
      RT_CHECK(next_ == 0 && !busy_, "OrderedJobs: the job count changed within a step");
      jobs_.resize(count);
    }
    RT_CHECK_LT(index, count, "OrderedJobs: job index out of range");
    RT_CHECK(index >= next_ + (busy_ ? 1 : 0) && !jobs_[index], "OrderedJobs: job ", index, " given twice in one step");
    jobs_[index] = std::move(job);
  }
  cv_.notify_all();
}

size_t OrderedJobs::close() {
  std::vector<std::function<void()>> rest;
  size_t ran = 0;
  {
    std::unique_lock<std::mutex> lock(mu_);
    closed_ = true;
    // Local work only (summing rows in memory): it ends by itself, so this wait needs no timeout.
    cv_.wait(lock, [this] { return !busy_; });
    ran = next_;
    std::exception_ptr error = std::exchange(error_, nullptr);
    for (size_t i = next_; i < jobs_.size() && jobs_[i] && !error; ++i) rest.push_back(std::move(jobs_[i]));
    jobs_.clear();
    next_ = 0;
    if (error) std::rethrow_exception(error);
  }
  for (auto& job : rest) {  // the helper is idle until the next give(): these are the caller's alone
    job();
    ++ran;
  }
  return ran;
}

void OrderedJobs::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || (!closed_ && !error_ && next_ < jobs_.size() && jobs_[next_]); });
    if (stop_) return;
    std::function<void()> job = std::move(jobs_[next_]);
    busy_ = true;
    lock.unlock();
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    job = nullptr;  // what it captured goes before close() returns
    lock.lock();
    busy_ = false;
    if (error) {
      error_ = error;  // what it wrote is half done: nothing after it may run
    } else {
      ++next_;
    }
    cv_.notify_all();
  }
}

}  // namespace ringtrain::ddp::detail
