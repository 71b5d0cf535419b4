// Live counters of the server, rendered in the Prometheus text exposition format. Histograms are arrays of
// atomics (lock-free on the request path); the per-(endpoint, code) request counts sit in a small map
// behind a mutex held only for one increment.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ringtrain::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const;
  // Estimated quantile (0 < q < 1): linear interpolation inside the bucket holding it; 0 when empty.
  double quantile(double q) const;
  // Prometheus lines "<name>_bucket{le=..}", "_sum", "_count".
  void render(std::string& out, const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> buckets_;  // one per bound, plus +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micro_{0};  // sum * 1e6, so it stays an integer atomic
};

class Metrics {
 public:
  Metrics();
  void request(const std::string& endpoint, int code, double seconds);
  void batch(int size) { batch_sizes_.observe(size); }
  void cacheHit() { cache_hits_.fetch_add(1, std::memory_order_relaxed); }
  void cacheMiss() { cache_misses_.fetch_add(1, std::memory_order_relaxed); }
  void queueRejected() { queue_rejections_.fetch_add(1, std::memory_order_relaxed); }
  void reload(bool ok) { (ok ? reloads_ok_ : reloads_failed_).fetch_add(1, std::memory_order_relaxed); }
  void model(uint64_t version, int64_t rows) {
    model_version_.store(version);
    model_rows_.store(rows);
  }
  uint64_t cacheHits() const { return cache_hits_.load(); }
  uint64_t reloadsFailed() const { return reloads_failed_.load(); }
  uint64_t queueRejections() const { return queue_rejections_.load(); }
  const Histogram& latency() const { return latency_; }
  const Histogram& batchSizes() const { return batch_sizes_; }
  // All metrics; queue_depth and the cache's size are sampled by the caller.
  std::string render(int64_t queue_depth, int64_t cache_entries, int64_t cache_bytes) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // guarded by mu_
  Histogram latency_;
  Histogram batch_sizes_;
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> cache_hits_{0}, cache_misses_{0}, queue_rejections_{0};
  std::atomic<uint64_t> reloads_ok_{0}, reloads_failed_{0};
  std::atomic<uint64_t> model_version_{0};
  std::atomic<int64_t> model_rows_{0};
};

}  // namespace ringtrain::serve
