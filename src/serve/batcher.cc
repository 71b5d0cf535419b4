#include "serve/batcher.h"

#include <cstdint>
#include <map>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "serve/metrics.h"

namespace ringtrain::serve {
namespace {

void finish(ScoreJob& job, std::vector<Hit> hits, std::exception_ptr failure) {
  if (!job.done) return;
  try {
    job.done(std::move(hits), std::move(failure));
  } catch (const std::exception& e) {
    error("serve: a scoring job's completion threw: {}", e.what());
  } catch (...) {
    error("serve: a scoring job's completion threw");
  }
}

}  // namespace

Batcher::Batcher(int workers, int max_batch, int64_t max_wait_us, int capacity, ScoreFn score, Metrics* metrics)
    : max_batch_(max_batch), max_wait_(max_wait_us), capacity_(static_cast<size_t>(capacity)),
      score_(std::move(score)), metrics_(metrics) {
  RT_CHECK(workers >= 1 && max_batch >= 1 && capacity >= 1, "bad batcher options");
  try {
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { run(); });
  } catch (...) {  // a thread refused (EAGAIN): the ones started must end before this object's members go
    stop();
    throw;
  }
}

Batcher::~Batcher() { stop(); }

bool Batcher::submit(const std::shared_ptr<ScoreJob>& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queue_.size() >= capacity_) return false;
    queue_.push_back(job);
  }
  cv_.notify_one();
  return true;
}

int64_t Batcher::depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

void Batcher::drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }
  cv_.notify_all();
}

void Batcher::stop() {
  // Called by the server's stop() only, which is serialized.
  std::deque<std::shared_ptr<ScoreJob>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
  }
  for (auto& job : left) {
    finish(*job, {}, std::make_exception_ptr(Error("server is shutting down")));
  }
}

void Batcher::run() {
  std::vector<std::shared_ptr<ScoreJob>> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      // Give concurrent requests up to max_wait to join this batch; a full batch goes at once.
      if (max_batch_ > 1 && static_cast<int>(queue_.size()) < max_batch_ && max_wait_.count() > 0 && !draining_) {
        const auto deadline = std::chrono::steady_clock::now() + max_wait_;
        cv_.wait_until(lock, deadline, [&] {
          return stopping_ || draining_ || static_cast<int>(queue_.size()) >= max_batch_;
        });
        if (stopping_) return;
      }
      // Another worker may have taken everything while this one waited.
      const size_t n = std::min(queue_.size(), static_cast<size_t>(max_batch_));
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // Jobs left behind belong to the next batch: wake a worker for them.
      if (!queue_.empty()) cv_.notify_one();
    }
    if (batch.empty()) continue;
    if (metrics_ != nullptr) metrics_->batch(static_cast<int>(batch.size()));
    score(batch);
    batch.clear();
  }
}

void Batcher::score(std::vector<std::shared_ptr<ScoreJob>>& batch) {
  // Group by model snapshot: almost always one group; two or more only across a swap.
  std::map<const Model*, std::vector<ScoreJob*>> groups;
  for (auto& job : batch) groups[job->model.get()].push_back(job.get());
  for (auto& [model, jobs] : groups) {
    std::vector<Query> queries;
    queries.reserve(jobs.size());
    for (ScoreJob* j : jobs) queries.push_back({j->query.data(), j->k, &j->exclude});
    std::vector<std::vector<Hit>> hits;
    std::exception_ptr failure;
    try {
      hits = score_(*model, queries);
      RT_CHECK(hits.size() == jobs.size(), "scorer returned ", hits.size(), " answers for ", jobs.size(), " queries");
    } catch (...) {
      failure = std::current_exception();
    }
    for (size_t i = 0; i < jobs.size(); ++i) finish(*jobs[i], failure ? std::vector<Hit>() : std::move(hits[i]), failure);
  }
}

}  // namespace ringtrain::serve
