#include "serve/batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>

#include "serve/metrics.h"
#include "serve/result_cache.h"

namespace ringtrain::serve {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<ScoreJob> job(const std::shared_ptr<const Model>& m, int k) {
  auto j = std::make_shared<ScoreJob>();
  j->model = m;
  j->query.assign(1, 1.0f);
  j->k = k;
  return j;
}

// The job's answer as a future (the server answers through an HTTP reply instead).
std::future<std::vector<Hit>> futureOf(ScoreJob& j) {
  auto promise = std::make_shared<std::promise<std::vector<Hit>>>();
  j.done = [promise](std::vector<Hit> hits, std::exception_ptr failure) {
    if (failure) promise->set_exception(failure);
    else promise->set_value(std::move(hits));
  };
  return promise->get_future();
}

TEST(BatcherTest, FullQueueRefusesAndQueuedJobsAreAllAnswered) {
  auto model = std::make_shared<const Model>();
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> calls{0};
  Metrics metrics;
  // The scorer blocks until released, so the queue fills up behind the first batch.
  Batcher batcher(1, 1, 0, 2, [&](const Model&, const std::vector<Query>& q) {
    calls++;
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, 20s, [&] { return release; });
    std::vector<std::vector<Hit>> out;
    for (const auto& x : q) out.push_back({Hit{x.k, 1.0f}});
    return out;
  }, &metrics);
  std::vector<std::shared_ptr<ScoreJob>> accepted;
  std::vector<std::future<std::vector<Hit>>> futures;
  int refused = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  // One job is taken by the worker, two wait in the queue, then submit refuses.
  for (int i = 0; refused == 0 && std::chrono::steady_clock::now() < deadline; ++i) {
    auto j = job(model, i + 1);
    auto f = futureOf(*j);
    if (batcher.submit(j)) {
      accepted.push_back(j);
      futures.push_back(std::move(f));
      if (accepted.size() == 1) {
        while (calls.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
      }
    } else {
      ++refused;
    }
  }
  EXPECT_EQ(accepted.size(), 3u);
  EXPECT_EQ(refused, 1);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  for (size_t i = 0; i < futures.size(); ++i) {
    ASSERT_EQ(futures[i].wait_for(10s), std::future_status::ready);
    EXPECT_EQ(futures[i].get()[0].row, static_cast<int64_t>(i + 1));  // each job got its own answer
  }
  EXPECT_EQ(metrics.batchSizes().count(), 3u);
}

TEST(BatcherTest, GathersConcurrentJobsIntoOneBatchPerModel) {
  auto m1 = std::make_shared<const Model>();
  auto m2 = std::make_shared<const Model>();
  std::mutex mu;
  std::vector<std::pair<const Model*, size_t>> groups;
  Metrics metrics;
  // A long max_wait and max_batch 8: eight jobs submitted together form one batch, in two model groups.
  Batcher batcher(1, 8, 5'000'000, 100, [&](const Model& m, const std::vector<Query>& q) {
    std::lock_guard<std::mutex> lock(mu);
    groups.emplace_back(&m, q.size());
    return std::vector<std::vector<Hit>>(q.size());
  }, &metrics);
  std::vector<std::future<std::vector<Hit>>> futures;
  for (int i = 0; i < 8; ++i) {
    auto j = job(i < 5 ? m1 : m2, 1);
    futures.push_back(futureOf(*j));
    ASSERT_TRUE(batcher.submit(j));
  }
  for (auto& f : futures) ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(groups.size(), 2u);
  for (const auto& [m, n] : groups) EXPECT_EQ(n, m == m1.get() ? 5u : 3u);
  EXPECT_EQ(metrics.batchSizes().count(), 1u);
}

// One worker, batches of up to 64 waiting up to `max_wait_us` to fill, and a scorer that answers every query
// with no hits.
std::unique_ptr<Batcher> batcherOfEmptyAnswers(int64_t max_wait_us) {
  return std::make_unique<Batcher>(1, 64, max_wait_us, 10, [](const Model&, const std::vector<Query>& q) {
    return std::vector<std::vector<Hit>>(q.size());
  }, nullptr);
}

// A stopping server drains: a job waiting for its batch to fill (a 10 s max_wait) is scored at once.
TEST(BatcherTest, DrainScoresAWaitingJobWithoutWaitingOutMaxWait) {
  auto model = std::make_shared<const Model>();
  std::shared_ptr<ScoreJob> j = job(model, 1);
  auto f = futureOf(*j);
  const std::unique_ptr<Batcher> owned = batcherOfEmptyAnswers(10'000'000);
  Batcher& batcher = *owned;
  ASSERT_TRUE(batcher.submit(j));
  EXPECT_EQ(f.wait_for(200ms), std::future_status::timeout) << "batched without waiting: nothing to drain";
  batcher.drain();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "still waiting out the 10 s max_wait";
  EXPECT_NO_THROW(f.get()) << "drained jobs are scored, not failed";
  std::shared_ptr<ScoreJob> later = job(model, 1);
  auto g = futureOf(*later);
  ASSERT_TRUE(batcher.submit(later));
  ASSERT_EQ(g.wait_for(2s), std::future_status::ready) << "after a drain, jobs go at once";
}

TEST(BatcherTest, StopFailsQueuedJobsInsteadOfHanging) {
  auto model = std::make_shared<const Model>();
  std::shared_ptr<ScoreJob> j = job(model, 1);
  auto f = futureOf(*j);
  {
    const std::unique_ptr<Batcher> batcher = batcherOfEmptyAnswers(5'000'000);
    ASSERT_TRUE(batcher->submit(j));
  }  // destroyed while the job waits for its batch to fill
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_THROW(f.get(), std::exception);
}

TEST(ResultCacheTest, BoundedLruKeyedByVersion) {
  ResultCache cache(16, 1 << 20);
  const auto k1 = ResultCache::key(1, "a", 10);
  const auto k2 = ResultCache::key(2, "a", 10);
  cache.put(k1, "v1");
  EXPECT_EQ(cache.get(k1).value_or(""), "v1");
  EXPECT_FALSE(cache.get(k2).has_value());
  EXPECT_FALSE(cache.get(ResultCache::key(1, "a", 11)).has_value());
  for (int i = 0; i < 1000; ++i) cache.put(ResultCache::key(1, std::to_string(i), 10), "x");
  EXPECT_LE(cache.size(), 16);
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
  ResultCache off(0, 1 << 20);
  off.put(k1, "v1");
  EXPECT_FALSE(off.get(k1).has_value());
  ResultCache no_bytes(1000, 0);
  EXPECT_FALSE(no_bytes.enabled());
}

// A working set that fits the bound stays whole, however its keys fall into the shards: 100 answers in 100
// entries, and 5 in 5, are all found again (per-shard shares of the bound kept 53 and 2 of them).
TEST(ResultCacheTest, AWorkingSetThatFitsIsKeptWhole) {
  for (const int n : {5, 100, 2000}) {
    ResultCache cache(n, 1 << 30);
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < n; ++i) cache.put(ResultCache::key(1, std::to_string(i), 10), "answer");
    }
    int hits = 0;
    for (int i = 0; i < n; ++i) hits += cache.get(ResultCache::key(1, std::to_string(i), 10)).has_value() ? 1 : 0;
    EXPECT_EQ(hits, n);
    EXPECT_EQ(cache.size(), n);
    cache.put(ResultCache::key(1, "one more", 10), "answer");  // over by one: one goes
    EXPECT_EQ(cache.size(), n);
    EXPECT_TRUE(cache.get(ResultCache::key(1, "one more", 10)).has_value());
  }
}

// Many request threads at once: the bounds hold once they are done, and the counts match what is held (a
// count that drifted would show as bytes left after clear()).
TEST(ResultCacheTest, ConcurrentInsertsKeepTheBoundsAndTheCounts) {
  const int64_t max_entries = 300, max_bytes = 16 * 20000;
  ResultCache cache(max_entries, max_bytes);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 3000; ++i) {
        const auto key = ResultCache::key(1, std::to_string((i * 7 + t * 13) % 700), 10);
        if (!cache.get(key)) cache.put(key, std::string(100 + (i * 31 + t) % 1500, 'x'));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(cache.size(), max_entries);
  EXPECT_LE(cache.bytes(), max_bytes);
  EXPECT_GT(cache.size(), 0);
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.bytes(), 0);
}

// Large answers are bounded by bytes, not only by count: the cache never holds more than its bytes, keeps
// the most recent answers, and does not keep one larger than a sixteenth of its bytes.
TEST(ResultCacheTest, BoundedInBytes) {
  const int64_t max_bytes = 16 * 10000;
  ResultCache cache(100000, max_bytes);
  const std::string answer(3000, 'x');
  const auto id = [](int i) { return ResultCache::key(1, std::to_string(1000 + i), 10); };  // keys of one length
  for (int i = 0; i < 2000; ++i) {
    cache.put(id(i), answer);
    ASSERT_LE(cache.bytes(), max_bytes) << "after " << i + 1;
  }
  EXPECT_EQ(cache.size(), max_bytes / ResultCache::entryBytes(id(1999), answer));
  EXPECT_EQ(cache.bytes(), cache.size() * ResultCache::entryBytes(id(1999), answer));
  EXPECT_TRUE(cache.get(id(1999)).has_value()) << "the newest answer is kept";
  const auto huge = ResultCache::key(1, "huge", 10);
  cache.put(huge, std::string(20000, 'y'));
  EXPECT_FALSE(cache.get(huge).has_value());
  EXPECT_TRUE(cache.get(id(1999)).has_value()) << "a refused answer pushes nothing out";
  // Replacing an answer counts its new size, not both.
  const auto again = id(1999);
  cache.put(again, "short");
  EXPECT_EQ(cache.get(again).value_or(""), "short");
  EXPECT_LE(cache.bytes(), max_bytes);
  cache.clear();
  EXPECT_EQ(cache.bytes(), 0);
}

TEST(MetricsTest, HistogramQuantilesAndPrometheusText) {
  Histogram h({1, 2, 4});
  for (int i = 0; i < 100; ++i) h.observe(i < 50 ? 0.5 : 3);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_NEAR(h.quantile(0.5), 1.0, 1e-9);
  EXPECT_GT(h.quantile(0.99), 2.0);
  EXPECT_LE(h.quantile(0.99), 4.0);
  std::string text;
  h.render(text, "x");
  EXPECT_NE(text.find("x_bucket{le=\"1\"} 50\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_bucket{le=\"+Inf\"} 100\n"), std::string::npos) << text;
  Metrics m;
  m.request("recommend", 200, 0.001);
  m.request("recommend", 404, 0.001);
  const std::string all = m.render(3, 4, 5000);
  EXPECT_NE(all.find("ringtrain_serve_requests_total{endpoint=\"recommend\",code=\"404\"} 1"), std::string::npos);
  EXPECT_NE(all.find("ringtrain_serve_errors_total 1"), std::string::npos);
  EXPECT_NE(all.find("ringtrain_serve_queue_depth 3"), std::string::npos);
  EXPECT_NE(all.find("ringtrain_serve_cache_entries 4\n"), std::string::npos);
  EXPECT_NE(all.find("ringtrain_serve_cache_bytes 5000\n"), std::string::npos);
}

}  // namespace
}  // namespace ringtrain::serve
