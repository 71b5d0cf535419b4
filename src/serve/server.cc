// The recommendation server; the request path and threads are described in
// include/ringtrain/serve/server.h.
#include "ringtrain/serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/serve/model.h"
#include "serve/ann_index.h"
#include "serve/batcher.h"
#include "serve/deferred_release.h"
#include "serve/lower_priority.h"
#include "serve/metrics.h"
#include "serve/result_cache.h"

namespace ringtrain::serve {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// How long a request waits for its batch to be scored before answering 503.
constexpr std::chrono::seconds kScoreTimeout{30};
// How much nicer than the server a (re)load runs (see loadAndIndex).
constexpr int kReloadNiceIncrement = 10;

// An answer other than 200, raised inside a handler.
struct HttpError {
  int status;
  std::string message;
};

void replyError(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json{{"error", message}, {"status", status}}.dump(), "application/json");
}

std::string endpointOf(const std::string& path) {
  if (path == "/recommend") return "recommend";
  if (path == "/healthz") return "healthz";
  if (path == "/metrics") return "metrics";
  if (path == "/admin/reload") return "admin_reload";
  return "other";
}

int parseK(const std::string& text) {
  int k = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), k);
  if (ec != std::errc() || ptr != text.data() + text.size() || k < 1 || k > kMaxK) {
    throw HttpError{400, "k must be an integer in 1.." + std::to_string(kMaxK) + ", got '" + text + "'"};
  }
  return k;
}

// A file in the watched directory that may be an export: *.vec or *.txt, not hidden (writers should write a
// hidden or differently named temporary file and rename it).
struct ExportFile {
  std::string path;
  fs::file_time_type mtime{};
  uintmax_t size = 0;
  bool operator==(const ExportFile& o) const { return path == o.path && mtime == o.mtime && size == o.size; }
  bool operator!=(const ExportFile& o) const { return !(*this == o); }
};

ExportFile newestExport(const std::string& dir) {
  ExportFile best;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    const std::string ext = p.extension().string();
    if (name.empty() || name[0] == '.' || (ext != ".vec" && ext != ".txt")) continue;
    std::error_code e2;
    if (!it->is_regular_file(e2)) continue;
    const auto mtime = it->last_write_time(e2);
    if (e2) continue;
    const auto size = it->file_size(e2);
    if (e2) continue;
    if (best.path.empty() || mtime > best.mtime || (mtime == best.mtime && p.string() > best.path)) {
      best = {p.string(), mtime, size};
    }
  }
  return best;
}

}  // namespace

struct Server::Impl {
  config::ServeOptions options;
  std::string model_path;
  std::string items_path;  // explicit --items; "" means items.tsv beside each model

  Metrics metrics;
  ResultCache cache;
  DeferredRelease retired_models;  // declared before everything that may hold a model (destroyed after)
  std::unique_ptr<Batcher> batcher;
  httplib::Server http;
  std::thread listener;
  int port = -1;
  int listen_fd = -1;  // the socket httplib listens on, captured when it is created

  // The serving model. Read with std::atomic_load, replaced with std::atomic_store: a request copies the
  // pointer once and keeps that snapshot to the end.
  std::shared_ptr<const Model> model;

  std::mutex reload_mu;        // serializes reloads
  uint64_t last_version = 0;   // guarded by reload_mu

  std::thread watcher;
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  bool watch_stop = false;  // guarded by watch_mu

  std::mutex stop_mu;
  bool started = false;  // guarded by stop_mu
  bool stopped = false;  // guarded by stop_mu

  explicit Impl(const config::ServeOptions& o) : options(o), cache(o.cache_entries) {}

  std::shared_ptr<const Model> current() const { return std::atomic_load(&model); }

  std::shared_ptr<Model> loadAndIndex(const std::string& path) {
    const std::string items = items_path.empty() ? defaultItemsPath(path) : items_path;
    const auto t0 = Clock::now();
    std::shared_ptr<Model> m;
    // At a lower priority: a reload under load then takes the CPU that requests leave instead of a fair
    // share of it (a 100,000 x 64 export is ~0.7 s of CPU to parse and index), so it slows down rather than
    // the requests (wrk, 64 connections, two reloads in 8 s: p99 22.7-23.5 ms at nice 0, 18.5-20.2 at +10).
    runWithLowerPriority(kReloadNiceIncrement, [&] {
      m = loadModel(path, items);
      if (options.index == "faiss") m->ann = buildAnnIndex(*m);
    });
    info("serve: loaded {} ({} items x {} dims{}{}) in {:.2f} s", path, m->rows, m->dim,
         items.empty() ? "" : ", names from " + items, options.index == "faiss" ? ", faiss HNSW index" : "",
         std::chrono::duration<double>(Clock::now() - t0).count());
    return m;
  }

  uint64_t reload(const std::string& requested) {
    std::string path = requested;
    if (path.empty()) {
      path = model_path;
      if (!options.watch_dir.empty()) {
        const ExportFile newest = newestExport(options.watch_dir);
        if (!newest.path.empty()) path = newest.path;
      }
    }
    RT_CHECK_T(DataError, !path.empty(), "no model to load: give --model or a serve.watch_dir with an export");
    std::lock_guard<std::mutex> lock(reload_mu);
    std::shared_ptr<Model> fresh;
    try {
      fresh = loadAndIndex(path);
    } catch (const Error& e) {
      metrics.reload(false);
      warn("serve: refused model {}: {} (version {} keeps serving)", path, e.what(), last_version);
      throw;
    }
    fresh->version = ++last_version;
    // A replaced model is destroyed on retired_models' thread, not by the request that drops it last.
    const std::shared_ptr<const Model> frozen = retired_models.track(std::shared_ptr<const Model>(std::move(fresh)));
    std::atomic_store(&model, frozen);
    // Entries of older versions can no longer be hit by new requests (the version is in the key); clearing
    // frees their memory at once.
    cache.clear();
    metrics.model(frozen->version, frozen->rows);
    metrics.reload(true);
    info("serve: model version {} is serving ({})", frozen->version, path);
    return frozen->version;
  }

  std::vector<std::vector<Hit>> score(const Model& m, const std::vector<Query>& queries) {
    if (m.ann) return m.ann->search(queries);
    return topK(m.packed, queries);
  }

  // The answer to one query (a single item or a basket), from the cache or the scorer.
  std::string recommend(const std::vector<std::string>& items, int k) {
    const std::shared_ptr<const Model> m = current();
    auto job = std::make_shared<ScoreJob>();
    job->exclude.reserve(items.size());
    for (const auto& token : items) {
      const int64_t row = m->find(token);
      if (row < 0) throw HttpError{404, "unknown item '" + token + "'"};
      if (std::find(job->exclude.begin(), job->exclude.end(), row) == job->exclude.end()) job->exclude.push_back(row);
    }
    std::vector<std::string> normalized = items;
    std::sort(normalized.begin(), normalized.end());
    normalized.erase(std::unique(normalized.begin(), normalized.end()), normalized.end());
    std::string query_key;
    for (const auto& t : normalized) query_key.append(t).push_back('\x1e');
    const std::string key = ResultCache::key(m->version, query_key, k);
    if (cache.enabled()) {
      if (auto hit = cache.get(key)) {
        metrics.cacheHit();
        return std::move(*hit);
      }
      metrics.cacheMiss();
    }

    std::vector<Hit> hits;
    const int k_eff = static_cast<int>(std::min<int64_t>(k, m->rows - static_cast<int64_t>(job->exclude.size())));
    if (k_eff > 0) {
      // The query: mean of the items' unit vectors, renormalized (a single item is its own vector).
      job->query.assign(m->dim, 0.0f);
      for (const int64_t row : job->exclude) {
        const float* v = m->row(row);
        for (int64_t d = 0; d < m->dim; ++d) job->query[d] += v[d];
      }
      double norm2 = 0.0;
      for (const float x : job->query) norm2 += static_cast<double>(x) * x;
      if (norm2 > 0.0) {
        const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
        for (float& x : job->query) x *= inv;
      }
      job->k = k_eff;
      job->model = m;
      auto future = job->result.get_future();
      if (!batcher->submit(job)) {
        metrics.queueRejected();
        throw HttpError{429, "server busy: scoring queue is full, retry later"};
      }
      if (future.wait_for(kScoreTimeout) != std::future_status::ready) {
        throw HttpError{503, "scoring timed out"};
      }
      try {
        hits = future.get();
      } catch (const std::exception& e) {
        throw HttpError{503, e.what()};
      }
    }

    json out;
    out["model_version"] = m->version;
    out["k"] = k;
    out["query"] = normalized;
    json list = json::array();
    for (const Hit& h : hits) {
      list.push_back({{"item", m->tokens[h.row]},
                      {"score", h.score},
                      {"name", m->names[h.row]},
                      {"category", m->categories[h.row]}});
    }
    out["items"] = std::move(list);
    std::string body = out.dump();
    cache.put(key, body);
    return body;
  }

  // Wraps a handler: HttpError and exceptions become JSON errors; /recommend latency is recorded.
  template <typename F>
  httplib::Server::Handler wrap(bool timed, F fn) {
    return [this, timed, fn](const httplib::Request& req, httplib::Response& res) {
      const auto t0 = Clock::now();
      try {
        fn(req, res);
        if (res.status == -1) res.status = 200;  // httplib fills in 200 only after the handler returns
      } catch (const HttpError& e) {
        replyError(res, e.status, e.message);
      } catch (const DataError& e) {
        replyError(res, 422, e.what());
      } catch (const std::exception& e) {
        error("serve: {} {}: {}", req.method, req.path, e.what());
        replyError(res, 500, "internal error");
      }
      if (timed) metrics.request("recommend", res.status, std::chrono::duration<double>(Clock::now() - t0).count());
    };
  }

  void routes() {
    http.Get("/recommend", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      if (!req.has_param("item") || req.get_param_value("item").empty()) {
        throw HttpError{400, "missing query parameter 'item'"};
      }
      const int k = req.has_param("k") ? parseK(req.get_param_value("k")) : 10;
      res.set_content(recommend({req.get_param_value("item")}, k), "application/json");
    }));
    http.Post("/recommend", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      const json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded()) throw HttpError{400, "request body is not valid JSON"};
      if (!body.is_object() || !body.contains("items") || !body["items"].is_array()) {
        throw HttpError{400, "expected a JSON object {\"items\": [\"TOKEN\", ...], \"k\": 10}"};
      }
      const json& list = body["items"];
      if (list.empty() || list.size() > static_cast<size_t>(kMaxBasketItems)) {
        throw HttpError{400, "'items' must hold 1.." + std::to_string(kMaxBasketItems) + " tokens"};
      }
      std::vector<std::string> items;
      for (const auto& v : list) {
        if (!v.is_string()) throw HttpError{400, "'items' must be strings"};
        items.push_back(v.get<std::string>());
      }
      int k = 10;
      if (body.contains("k")) {
        const json& kv = body["k"];
        if (!kv.is_number_integer() || kv.get<int64_t>() < 1 || kv.get<int64_t>() > kMaxK) {
          throw HttpError{400, "k must be an integer in 1.." + std::to_string(kMaxK)};
        }
        k = kv.get<int>();
      }
      res.set_content(recommend(items, k), "application/json");
    }));
    http.Get("/healthz", wrap(false, [this](const httplib::Request&, httplib::Response& res) {
      const auto m = current();
      res.set_content(json{{"status", "ok"},
                           {"model_version", m->version},
                           {"items", m->rows},
                           {"dim", m->dim},
                           {"index", options.index},
                           {"model", m->path}}
                          .dump(),
                      "application/json");
    }));
    http.Get("/metrics", wrap(false, [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(batcher->depth(), cache.size()), "text/plain; version=0.0.4");
    }));
    http.Post("/admin/reload", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      if (options.admin_token.empty()) throw HttpError{404, "admin endpoints are disabled (serve.admin_token is empty)"};
      const std::string expected = "Bearer " + options.admin_token;
      const std::string given = req.get_header_value("Authorization");
      // Compare in time independent of where the strings differ.
      unsigned diff = given.size() != expected.size();
      for (size_t i = 0; i < std::min(given.size(), expected.size()); ++i) diff |= given[i] ^ expected[i];
      if (diff != 0) throw HttpError{401, "missing or wrong 'Authorization: Bearer <token>'"};
      std::string path;
      if (!req.body.empty()) {
        const json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) throw HttpError{400, "request body is not a JSON object"};
        if (body.contains("model")) {
          if (!body["model"].is_string()) throw HttpError{400, "'model' must be a path"};
          path = body["model"].get<std::string>();
        }
      }
      const uint64_t version = reload(path);
      res.set_content(json{{"status", "ok"}, {"model_version", version}, {"model", current()->path}}.dump(),
                      "application/json");
    }));
    // Statuses set by httplib itself (no route: 404, body over the limit: 413, unparsable request: 400)
    // get a JSON body too.
    http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        const std::string msg = res.status == 413   ? "request body too large"
                                : res.status == 404 ? "no such endpoint"
                                                    : "bad request";
        replyError(res, res.status, msg);
      }
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const std::string ep = endpointOf(req.path);
      if (ep != "recommend" || res.status == 413) metrics.request(ep, res.status, 0.0);
    });
  }

  // `loaded` is what the directory held at start (taken before the thread starts): not "new".
  void watch(ExportFile loaded) {
    const auto interval = std::chrono::milliseconds(options.watch_interval_ms);
    ExportFile pending;
    std::unique_lock<std::mutex> lock(watch_mu);
    while (!watch_cv.wait_for(lock, interval, [&] { return watch_stop; })) {
      lock.unlock();
      const ExportFile now = newestExport(options.watch_dir);
      if (!now.path.empty() && now != loaded) {
        if (now == pending) {  // unchanged for one interval: the writer is done
          loaded = now;
          try {
            reload(now.path);
          } catch (const std::exception&) {
            // reload() logged and counted it; the old model keeps serving until a newer export appears.
          }
        } else {
          pending = now;
        }
      }
      lock.lock();
    }
  }
};

Server::Server(const config::ServeOptions& options, const std::string& model_path, const std::string& items_path)
    : impl_(std::make_unique<Impl>(options)) {
  impl_->model_path = model_path;
  impl_->items_path = items_path;
  impl_->reload("");
}

Server::~Server() { stop(); }

void Server::start() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.stop_mu);
    RT_CHECK(!s.started, "Server::start() called twice");
    s.started = true;
  }
  s.batcher = std::make_unique<Batcher>(
      s.options.score_threads, s.options.max_batch, s.options.max_wait_us, s.options.queue_capacity,
      [this](const Model& m, const std::vector<Query>& q) { return impl_->score(m, q); }, &s.metrics);
  const int threads = s.options.threads;
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.http.set_payload_max_length(static_cast<size_t>(s.options.max_body_bytes));
  s.http.set_keep_alive_max_count(100000);
  s.http.set_keep_alive_timeout(5);
  s.http.set_read_timeout(10);
  s.http.set_write_timeout(10);
  s.http.set_tcp_nodelay(true);
  // httplib's own socket options set SO_REUSEPORT, which lets a second server bind a port in use without
  // an error (the two then split the connections). SO_REUSEADDR alone still allows a restart while old
  // connections sit in TIME_WAIT. The socket is remembered for the backlog below.
  s.http.set_socket_options([this](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    impl_->listen_fd = sock;
  });
  s.routes();
  s.port = s.options.port == 0 ? s.http.bind_to_any_port(s.options.host)
                               : (s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
  if (s.port < 0) {
    RT_THROW(ConfigError, "serve: cannot listen on ", s.options.host, ":", s.options.port,
             " (address in use or not local? see serve.host / serve.port)");
  }
  // httplib 0.11 listens with a backlog of 5, compiled into the library. When more clients than that
  // connect at once (wrk's 64 connections, a proxy filling its pool) the kernel drops the surplus
  // handshakes and those clients wait for TCP retransmits, 1 s and more, before their first request is
  // read: latency the server's own histogram never sees. Listening again on the bound socket raises the
  // backlog (the kernel caps it at net.core.somaxconn).
  if (s.listen_fd < 0 || ::listen(s.listen_fd, SOMAXCONN) != 0) {
    warn("serve: could not raise the listen backlog (fd {}: {}); bursts of new connections may wait for TCP "
         "retransmits", s.listen_fd, std::strerror(errno));
  }
  s.listener = std::thread([this] { impl_->http.listen_after_bind(); });
  // httplib has no readiness signal, and a stop() before its loop runs would be lost: wait (bounded) for it.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!s.http.is_running() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  RT_CHECK(s.http.is_running(), "serve: the HTTP listener did not start within 10 s");
  if (!s.options.watch_dir.empty()) {
    s.watcher = std::thread([this, initial = newestExport(s.options.watch_dir)] { impl_->watch(initial); });
  }
  info("serve: listening on http://{}:{} (model version {}, {} HTTP threads, {} scoring threads, max_batch {}, "
       "index {})",
       s.options.host, s.port, modelVersion(), s.options.threads, s.options.score_threads, s.options.max_batch,
       s.options.index);
}

int Server::port() const { return impl_->port; }

bool Server::running() const { return impl_->http.is_running(); }

void Server::stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.stop_mu);
  if (!s.started || s.stopped) return;
  s.stopped = true;
  {
    std::lock_guard<std::mutex> wl(s.watch_mu);
    s.watch_stop = true;
  }
  s.watch_cv.notify_all();
  if (s.watcher.joinable()) s.watcher.join();
  // Stop accepting; httplib waits for the requests in flight, which still have a running batcher.
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
  s.batcher->stop();
  info("serve: stopped");
}

uint64_t Server::modelVersion() const { return impl_->current()->version; }

uint64_t Server::reload(const std::string& path) { return impl_->reload(path); }

}  // namespace ringtrain::serve
