// A helper thread that runs one step's jobs in index order, as they are handed over: job k runs once jobs
// 0..k-1 have run and job k has been given. The sparse-row sync uses it to sum a table's rows into the
// owners' messages while backward still runs (tables become ready in any order; their blocks go into the
// messages in table order). close() finishes the step on the caller's thread, so which jobs ran does not
// depend on how far the helper got.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ringtrain::ddp::detail {

class OrderedJobs {
 public:
  OrderedJobs();   // starts the thread
  ~OrderedJobs();  // stops it after the job in progress (jobs not started are dropped)
  OrderedJobs(const OrderedJobs&) = delete;
  OrderedJobs& operator=(const OrderedJobs&) = delete;

  // Hands over job `index` of a step of `count` jobs (the same count every call of a step). Throws when the
  // index was already given (or already ran) this step.
  void give(size_t index, size_t count, std::function<void()> job);
  // Ends the step: waits for the helper's job in progress, then runs on the calling thread the given jobs
  // that come next in order, up to the first index not given. Returns how many jobs ran (jobs 0..n-1; the
  // caller does what no job was given for). Rethrows a job's exception: no job after it ran. The next give()
  // starts a new step.
  size_t close();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> jobs_;  // this step's, by index; empty where not given yet
  size_t next_ = 0;      // the next job to run
  bool closed_ = false;  // close() called: run nothing until the next step's first give()
  bool busy_ = false;    // a job is running
  bool stop_ = false;
  std::exception_ptr error_;  // a job's, kept for close(); nothing runs after it
  std::thread thread_;   // last: starts after the members it reads
};

}  // namespace ringtrain::ddp::detail
