// Dynamic batching. Request threads submit scoring jobs to a bounded queue (full: submit() refuses, the
// caller answers 429); `workers` threads each take the first waiting job, wait up to max_wait for the
// queue to hold max_batch jobs, take up to max_batch, and score them together. Jobs in a batch may hold
// different model snapshots (a swap between their arrivals): each snapshot's jobs are scored as one group
// on the model they started with. A job's result comes back through its `done` callback, called once on a
// scoring worker (or on the thread that stops the batcher); a scoring exception goes to every job of the
// group instead of escaping the thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ringtrain/serve/model.h"
#include "ringtrain/serve/scorer.h"

namespace ringtrain::serve {

class Metrics;

struct ScoreJob {
  std::shared_ptr<const Model> model;
  std::vector<float> query;  // model->dim floats
  std::vector<int64_t> exclude;
  int k = 10;
  // Called once for each job that submit() accepted (never for a refused one): the hits, or an exception
  // (scoring failed, or the batcher stopped first). It runs on a scoring worker and should be quick; what
  // it throws is logged and dropped, so it should answer its caller on every path itself.
  std::function<void(std::vector<Hit> hits, std::exception_ptr failure)> done;
};

using ScoreFn = std::function<std::vector<std::vector<Hit>>(const Model&, const std::vector<Query>&)>;

class Batcher {
 public:
  Batcher(int workers, int max_batch, int64_t max_wait_us, int capacity, ScoreFn score, Metrics* metrics);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // False (and the job untouched) when the queue is full or the batcher stopped.
  bool submit(const std::shared_ptr<ScoreJob>& job);
  // From now on a batch goes as soon as a worker is free, without waiting for max_wait to fill it: a
  // stopping server answers what is queued at once, not after a long max_wait. Idempotent.
  void drain();
  // Fails queued jobs, joins the workers. Idempotent.
  void stop();
  int64_t depth() const;

 private:
  void run();
  void score(std::vector<std::shared_ptr<ScoreJob>>& batch);

  const int max_batch_;
  const std::chrono::microseconds max_wait_;
  const size_t capacity_;
  ScoreFn score_;
  Metrics* metrics_;  // outlives the batcher (both owned by the server)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ScoreJob>> queue_;  // guarded by mu_
  bool stopping_ = false;                        // guarded by mu_
  bool draining_ = false;                        // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace ringtrain::serve
