#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ringtrain::serve {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(bounds_.size() + 1) {
  for (auto& b : buckets_) b.store(0);
}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micro_.fetch_add(static_cast<uint64_t>(std::llround(value * 1e6)), std::memory_order_relaxed);
}

double Histogram::sum() const { return static_cast<double>(sum_micro_.load(std::memory_order_relaxed)) / 1e6; }

double Histogram::quantile(double q) const {
  std::vector<uint64_t> counts(buckets_.size());
  uint64_t total = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) total += counts[i] = buckets_[i].load(std::memory_order_relaxed);
  if (total == 0) return 0.0;
  const double rank = q * static_cast<double>(total);
  uint64_t below = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > 0 && static_cast<double>(below + counts[i]) >= rank) {
      const double lo = i == 0 ? 0.0 : bounds_[i - 1];
      if (i == bounds_.size()) return lo;  // the +Inf bucket: its lower bound is all we know
      const double frac = (rank - static_cast<double>(below)) / static_cast<double>(counts[i]);
      return lo + (bounds_[i] - lo) * std::clamp(frac, 0.0, 1.0);
    }
    below += counts[i];
  }
  return bounds_.back();
}

void Histogram::render(std::string& out, const std::string& name) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string le = i < bounds_.size() ? fmt::format("{}", bounds_[i]) : "+Inf";
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, le, cumulative);
  }
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum(), name, count());
}

Metrics::Metrics()
    : latency_({0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0}),
      batch_sizes_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}) {}

void Metrics::request(const std::string& endpoint, int code, double seconds) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_[{endpoint, code}];
  }
  if (code >= 400) errors_.fetch_add(1, std::memory_order_relaxed);
  if (endpoint == "recommend") latency_.observe(seconds);
}

std::string Metrics::render(int64_t queue_depth, int64_t cache_entries, int64_t cache_bytes) const {
  std::string out;
  out += "# HELP ringtrain_serve_requests_total HTTP requests by endpoint and status code.\n";
  out += "# TYPE ringtrain_serve_requests_total counter\n";
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, n] : requests_) {
      out += fmt::format("ringtrain_serve_requests_total{{endpoint=\"{}\",code=\"{}\"}} {}\n", key.first, key.second, n);
    }
  }
  out += "# HELP ringtrain_serve_errors_total Requests answered with a 4xx or 5xx status.\n";
  out += "# TYPE ringtrain_serve_errors_total counter\n";
  out += fmt::format("ringtrain_serve_errors_total {}\n", errors_.load());
  out += "# HELP ringtrain_serve_request_seconds Latency of /recommend requests.\n";
  out += "# TYPE ringtrain_serve_request_seconds histogram\n";
  latency_.render(out, "ringtrain_serve_request_seconds");
  out += "# HELP ringtrain_serve_request_seconds_quantile Latency quantiles estimated from the histogram.\n";
  out += "# TYPE ringtrain_serve_request_seconds_quantile gauge\n";
  for (const double q : {0.5, 0.95, 0.99}) {
    out += fmt::format("ringtrain_serve_request_seconds_quantile{{quantile=\"{}\"}} {:.6f}\n", q, latency_.quantile(q));
  }
  out += "# HELP ringtrain_serve_batch_size Queries scored together per batch.\n";
  out += "# TYPE ringtrain_serve_batch_size histogram\n";
  batch_sizes_.render(out, "ringtrain_serve_batch_size");
  out += "# TYPE ringtrain_serve_cache_hits_total counter\n";
  out += fmt::format("ringtrain_serve_cache_hits_total {}\n", cache_hits_.load());
  out += "# TYPE ringtrain_serve_cache_misses_total counter\n";
  out += fmt::format("ringtrain_serve_cache_misses_total {}\n", cache_misses_.load());
  out += "# TYPE ringtrain_serve_cache_entries gauge\n";
  out += fmt::format("ringtrain_serve_cache_entries {}\n", cache_entries);
  out += "# HELP ringtrain_serve_cache_bytes What the cached answers count against serve.cache_mb.\n";
  out += "# TYPE ringtrain_serve_cache_bytes gauge\n";
  out += fmt::format("ringtrain_serve_cache_bytes {}\n", cache_bytes);
  out += "# HELP ringtrain_serve_queue_rejections_total Queries refused with 429 because the queue was full.\n";
  out += "# TYPE ringtrain_serve_queue_rejections_total counter\n";
  out += fmt::format("ringtrain_serve_queue_rejections_total {}\n", queue_rejections_.load());
  out += "# TYPE ringtrain_serve_queue_depth gauge\n";
  out += fmt::format("ringtrain_serve_queue_depth {}\n", queue_depth);
  out += "# TYPE ringtrain_serve_model_version gauge\n";
  out += fmt::format("ringtrain_serve_model_version {}\n", model_version_.load());
  out += "# TYPE ringtrain_serve_model_items gauge\n";
  out += fmt::format("ringtrain_serve_model_items {}\n", model_rows_.load());
  out += "# TYPE ringtrain_serve_reloads_total counter\n";
  out += fmt::format("ringtrain_serve_reloads_total{{result=\"ok\"}} {}\n", reloads_ok_.load());
  out += fmt::format("ringtrain_serve_reloads_total{{result=\"refused\"}} {}\n", reloads_failed_.load());
  return out;
}

}  // namespace ringtrain::serve
