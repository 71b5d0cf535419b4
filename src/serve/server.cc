// The recommendation server; the request path and threads are described in
// include/ringtrain/serve/server.h.
#include "ringtrain/serve/server.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <fmt/format.h>
#include <iterator>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <system_error>
#include <thread>

#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/data/items_file.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/serve/model.h"
#include "serve/ann_index.h"
#include "serve/batcher.h"
#include "serve/deferred_release.h"
#include "serve/http_server.h"
#include "serve/lower_priority.h"
#include "serve/metrics.h"
#include "serve/result_cache.h"

namespace ringtrain::serve {
namespace {

// `text` cut to 120 bytes (at a UTF-8 character boundary), with "..." when cut.
std::string clipped(const std::string& text) {
  constexpr size_t kLimit = 120;
  if (text.size() <= kLimit) return text;
  size_t end = kLimit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end) + "...";
}

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// How long a request waits for its answer (its batch to be scored) before the HTTP layer answers 503.
constexpr std::chrono::seconds kScoreTimeout{30};
// The same for an admin reload, which parses and indexes a whole model at a lower priority.
constexpr std::chrono::minutes kAdminTimeout{10};
// How much nicer than the server a (re)load runs (see loadAndIndex).
constexpr int kReloadNiceIncrement = 10;

// An answer other than 200, raised inside a handler; a 405 names the methods the path takes.
struct HttpError {
  int status;
  std::string message;
  std::string allow = {};
};

// Invalid UTF-8 (a token, a file name or an error message quoting bytes of a broken file) is replaced with
// U+FFFD: the default dump() throws on it, which would turn an answer into a 500 or, outside a handler, an abort.
HttpResponse jsonResponse(const json& body, int status = 200) {
  return {status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace)};
}

HttpResponse errorResponse(int status, const std::string& message, const std::string& allow = "") {
  HttpResponse r = jsonResponse(json{{"error", message}, {"status", status}}, status);
  r.allow = allow;
  return r;
}

// The message for a status the HTTP layer answers itself.
std::string layerMessage(int status) {
  switch (status) {
    case 400: return "bad request";
    case 404: return "no such endpoint";
    case 413: return "request body too large";
    case 431: return "request headers too large";
    case 503: return "request timed out";
    default: return "internal error";
  }
}

std::string endpointOf(const std::string& path) {
  if (path == "/recommend") return "recommend";
  if (path == "/healthz") return "healthz";
  if (path == "/metrics") return "metrics";
  if (path == "/admin/reload") return "admin_reload";
  return "other";
}

// The methods an endpoint answers (its 405's Allow header); HEAD goes wherever GET does.
std::string methodsOf(const std::string& endpoint) {
  if (endpoint == "recommend") return "GET, HEAD, POST";
  if (endpoint == "admin_reload") return "POST";
  return "GET, HEAD";
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
// hidden or differently named temporary file and rename it). Its identity is its inode, time and size: a file
// renamed onto an old name, or rewritten in place, is another export.
struct ExportFile {
  std::string path;
  std::pair<int64_t, int64_t> mtime{};  // seconds, nanoseconds
  uintmax_t size = 0;
  ino_t inode = 0;
  bool operator==(const ExportFile& o) const {
    return path == o.path && mtime == o.mtime && size == o.size && inode == o.inode;
  }
  bool operator!=(const ExportFile& o) const { return !(*this == o); }
};

using ExportListing = std::map<std::string, ExportFile>;  // path -> file

ExportListing listExports(const std::string& dir) {
  ExportListing out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    const std::string ext = p.extension().string();
    if (name.empty() || name[0] == '.' || (ext != ".vec" && ext != ".txt")) continue;
    struct stat st {};  // one stat for every field: two calls could describe two files
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    out[p.string()] = ExportFile{p.string(), {st.st_mtim.tv_sec, st.st_mtim.tv_nsec},
                                 static_cast<uintmax_t>(st.st_size), st.st_ino};
  }
  return out;
}

// Which of two exports is the newer: by modification time, ties to the greater path.
bool newer(const ExportFile& a, const ExportFile& b) { return a.mtime != b.mtime ? a.mtime > b.mtime : a.path > b.path; }

// The files of `listing` that `keep` accepts, newest first.
template <typename Filter>
std::vector<ExportFile> newestFirst(const ExportListing& listing, Filter keep) {
  std::vector<ExportFile> files;
  for (const auto& [path, file] : listing) {
    if (keep(file)) files.push_back(file);
  }
  std::sort(files.begin(), files.end(), newer);
  return files;
}

}  // namespace

// Reloads asked for over HTTP take seconds: they run here, one at a time, not on an I/O thread.
class AdminWorker {
 public:
  AdminWorker() : thread_([this] { run(); }) {}
  ~AdminWorker() { stop(); }
  // Runs `task` after those posted before it; runs `cancel` instead (at once, on the caller's thread, or in
  // stop()) when the worker stops first.
  void post(std::function<void()> task, std::function<void()> cancel) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopping_) {
        tasks_.push_back({std::move(task), std::move(cancel)});
        cv_.notify_one();
        return;
      }
    }
    cancel();
  }
  // Cancels what is queued and whatever is posted from now on; the task running goes on. Idempotent.
  void cancelQueued() {
    std::deque<Task> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      dropped.swap(tasks_);
    }
    cv_.notify_one();
    for (Task& t : dropped) t.cancel();
  }
  // cancelQueued(), then waits for the task running. Idempotent.
  void stop() {
    cancelQueued();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Task {
    std::function<void()> run;
    std::function<void()> cancel;
  };
  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      if (stopping_) return;  // stop() cancels what is left
      Task task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task.run();  // tasks catch their own exceptions
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread thread_;
};

struct Server::Impl {
  config::ServeOptions options;
  std::string model_path;
  std::string items_path;  // explicit --items; "" means items.tsv beside each model

  Metrics metrics;
  ResultCache cache;
  DeferredRelease retired_models;  // declared before everything that may hold a model (destroyed after)
  std::unique_ptr<Batcher> batcher;
  std::unique_ptr<AdminWorker> admin;
  std::unique_ptr<HttpServer> http;

  // The serving model. Read with std::atomic_load, replaced with std::atomic_store: a request copies the
  // pointer once and keeps that snapshot to the end.
  std::shared_ptr<const Model> model;

  std::mutex reload_mu;        // serializes reloads
  uint64_t last_version = 0;   // guarded by reload_mu

  std::thread watcher;
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  bool watch_stop = false;  // guarded by watch_mu
  ExportListing watch_start;  // serve.watch_dir before the first load: what the watcher starts from

  std::mutex stop_mu;
  bool started = false;  // guarded by stop_mu
  bool stopped = false;  // guarded by stop_mu

  explicit Impl(const config::ServeOptions& o) : options(o), cache(o.cache_entries, o.cache_mb << 20) {}

  std::shared_ptr<const Model> current() const { return std::atomic_load(&model); }

  std::shared_ptr<Model> loadAndIndex(const std::string& path) {
    const std::string items = items_path.empty() ? data::itemsBeside(path) : items_path;
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

  // At start: the newest export of serve.watch_dir that loads, else --model. A broken newest export (a bad
  // deploy) is passed over with a warning: a restart must not turn it into an outage.
  uint64_t loadInitial() {
    std::vector<std::string> candidates;
    if (!options.watch_dir.empty()) {
      for (const ExportFile& f : newestFirst(watch_start, [](const ExportFile&) { return true; })) {
        candidates.push_back(f.path);
      }
    }
    const auto same = [](const std::string& a, const std::string& b) {
      std::error_code ec;
      return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
    };
    // --model last, once (it may be one of the exports).
    if (!model_path.empty() &&
        std::none_of(candidates.begin(), candidates.end(), [&](const std::string& c) { return same(c, model_path); })) {
      candidates.push_back(model_path);
    }
    RT_CHECK_T(DataError, !candidates.empty(), "no model to load: give --model or a serve.watch_dir with an export");
    for (size_t i = 0;; ++i) {
      try {
        const uint64_t version = reload(candidates[i], /*initial=*/true);
        // What loading it read and parsed was freed, and stays in the process until trimmed (a reload's is
        // trimmed once the model it replaced is gone: DeferredRelease).
        releaseFreedMemory();
        if (!model_path.empty() && !same(candidates[i], model_path)) {
          info("serve: serving {}, the newest export in serve.watch_dir that loads, rather than --model {}",
               candidates[i], model_path);
        }
        return version;
      } catch (const std::exception& e) {  // FAISS and allocation failures too: the next candidate may fit
        if (i + 1 == candidates.size()) throw;
        warn("serve: at start, {} does not load ({}); trying {}", candidates[i], e.what(), candidates[i + 1]);
      }
    }
  }

  uint64_t reload(const std::string& requested, bool initial = false) {
    std::string path = requested;
    if (path.empty()) {
      path = current()->path;  // the file serving now, read again: never another export behind the watcher's back
    }
    std::lock_guard<std::mutex> lock(reload_mu);
    std::shared_ptr<Model> fresh;
    try {
      // Only the first load may read a pipe (--model <(zcat m.vec.gz)); a later one would wait on it forever,
      // holding every reload after it, and a stopping server with them.
      struct stat st {};
      if (!initial && ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
        RT_THROW(DataError, path, ": is not a regular file (a FIFO, socket or device); a reload reads files only");
      }
      fresh = loadAndIndex(path);
    } catch (const std::exception& e) {  // FAISS and allocation failures too: counted and said like the others
      if (!initial) metrics.reload(false);
      // At start-up there is no version yet: the error itself ends the server, said once by its caller.
      if (last_version > 0) warn("serve: refused model {}: {} (version {} keeps serving)", path, e.what(), last_version);
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
    if (!initial) metrics.reload(true);  // the first model is a load, not a reload
    info("serve: model version {} is serving ({})", frozen->version, path);
    return frozen->version;
  }

  std::vector<std::vector<Hit>> score(const Model& m, const std::vector<Query>& queries) {
    if (m.ann) return m.ann->search(queries);
    return topK(m.packed, queries);
  }

  // {"items":[{"category":..,"item":..,"key":..,"name":..,"score":S},...],"k":K,"model_version":V,"query":[..]}
  // from the fragments the model rendered at load: per answer only the scores are formatted.
  static std::string render(const Model& m, int k, const std::vector<int64_t>& query_rows, const std::vector<Hit>& hits) {
    // The hits' fragments are scattered over the model's text (tens of MB for a large catalog): ask for all
    // of them at once, offsets first, so their cache misses overlap instead of stalling the appends below
    // one by one.
    for (const Hit& h : hits) __builtin_prefetch(&m.json_entry_at[h.row]);
    for (const Hit& h : hits) {
      const std::string_view entry = m.entryJson(h.row);
      for (size_t at = 0; at < entry.size(); at += 64) __builtin_prefetch(entry.data() + at);
      if (!entry.empty()) __builtin_prefetch(&entry.back());  // a line the 64-byte steps can skip
    }
    std::string out;
    out.reserve(96 + hits.size() * 96);
    out += "{\"items\":[";
    for (size_t i = 0; i < hits.size(); ++i) {
      if (i > 0) out += ',';
      out += m.entryJson(hits[i].row);
      if (std::isfinite(hits[i].score)) {
        fmt::format_to(std::back_inserter(out), "{}", hits[i].score);  // shortest text that reads back exactly
      } else {
        out += "null";
      }
      out += '}';
    }
    fmt::format_to(std::back_inserter(out), "],\"k\":{},\"model_version\":{},\"query\":[", k, m.version);
    for (size_t i = 0; i < query_rows.size(); ++i) {
      if (i > 0) out += ',';
      out += m.tokenJson(query_rows[i]);
    }
    out += "]}";
    return out;
  }

  // Answers one query (a single item or a basket): from the cache at once, or later from a scoring worker.
  // Throws HttpError for an unknown item (404), a query without direction (422) or a full queue (429), before
  // anything is queued.
  void recommend(const std::vector<std::string>& items, int k, const HttpReply& reply) {
    std::shared_ptr<const Model> m = current();
    auto job = std::make_shared<ScoreJob>();
    job->exclude.reserve(items.size());
    for (const auto& token : items) {
      const int64_t row = m->findItem(token);  // a token, or a key of items.tsv
      // Quoted up to a length: the answer should not echo a megabyte someone sent as an item.
      if (row < 0) throw HttpError{404, "unknown item '" + clipped(token) + "'"};
      if (std::find(job->exclude.begin(), job->exclude.end(), row) == job->exclude.end()) job->exclude.push_back(row);
    }
    // The query's distinct rows in token order: the answer's "query" (tokens and rows are one to one, so
    // these are the sorted distinct tokens), and as numbers the cache key. Not the tokens joined: a token may
    // hold any separator byte (an export's tokens are not checked for control characters), and "a<sep>b" would
    // then find the answer cached for the basket {a, b}.
    std::vector<int64_t> query_rows = job->exclude;
    std::sort(query_rows.begin(), query_rows.end(), [&](int64_t a, int64_t b) { return m->tokens[a] < m->tokens[b]; });
    std::string query_key;
    for (const int64_t row : query_rows) query_key.append(std::to_string(row)).push_back(',');
    std::string key = ResultCache::key(m->version, query_key, k);
    if (cache.enabled()) {
      if (auto hit = cache.get(key)) {
        metrics.cacheHit();
        return reply({200, "application/json", std::move(*hit)});
      }
      metrics.cacheMiss();
    }
    const int k_eff = static_cast<int>(std::min<int64_t>(k, m->rows - static_cast<int64_t>(job->exclude.size())));
    if (k_eff <= 0) {  // the query holds the whole catalog
      std::string body = render(*m, k, query_rows, {});
      cache.put(key, body);
      return reply({200, "application/json", std::move(body)});
    }
    // The query: mean of the items' unit vectors, renormalized (a single item is its own vector).
    job->query.assign(m->dim, 0.0f);
    for (const int64_t row : job->exclude) {
      const float* v = m->row(row);
      for (int64_t d = 0; d < m->dim; ++d) job->query[d] += v[d];
    }
    double norm2 = 0.0;
    for (const float x : job->query) norm2 += static_cast<double>(x) * x;
    // Zero vectors (an export may hold some; the load warns), or unit vectors that cancel: every candidate
    // would score 0, or the float rounding of the sum (under 1e-6 of each vector per dimension), and the
    // "top k" would be the first k rows or noise. A sum shorter than 1e-5 per item is taken as no direction.
    const double no_direction = 1e-5 * static_cast<double>(job->exclude.size());
    if (norm2 <= no_direction * no_direction) {
      throw HttpError{422, "the query has no direction (its items' vectors are zero or cancel out)"};
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
    for (float& x : job->query) x *= inv;
    job->k = k_eff;
    job->model = m;
    // Runs on the scoring worker that scored the batch; m keeps the snapshot the answer is rendered from.
    // Every path replies: a failure here is a 500 at once, not a 503 from the HTTP layer's deadline 30 s
    // later.
    job->done = [this, m, k, query_rows = std::move(query_rows), key = std::move(key), reply](
                    std::vector<Hit> hits, std::exception_ptr failure) {
      try {
        if (failure) std::rethrow_exception(failure);
        std::string body = render(*m, k, query_rows, hits);
        cache.put(key, body);
        reply({200, "application/json", std::move(body)});
      } catch (const std::exception& e) {
        if (failure) return reply(errorResponse(503, e.what()));  // scoring failed or the server is stopping
        error("serve: rendering an answer: {}", e.what());
        reply(errorResponse(500, "internal error"));
      } catch (...) {
        reply(errorResponse(500, "internal error"));
      }
    };
    if (!batcher->submit(job)) {
      metrics.queueRejected();
      throw HttpError{429, "server busy: scoring queue is full, retry later"};
    }
  }

  // A POST takes its arguments in its JSON body: a URL parameter (?k=2, ?model=...) would otherwise be
  // ignored, and the request answered as if it had been read.
  static void refuseQueryParameters(const HttpRequest& req, const std::string& body_keys) {
    if (req.query.empty()) return;
    throw HttpError{400, "unexpected query parameter '" + clipped(req.query.begin()->first) + "': a POST takes " +
                             body_keys + " in its JSON body"};
  }

  // A request's JSON body. A key given twice in one object is refused, as a repeated URL parameter and a
  // repeated key in a job file are: JSON parsers keep one of them without a word.
  static json parseRequestBody(const std::string& text) {
    std::vector<std::set<std::string>> open_objects;  // the keys of each object being read
    const json body = json::parse(
        text,
        [&](int, json::parse_event_t event, json& parsed) {
          if (event == json::parse_event_t::object_start) open_objects.emplace_back();
          if (event == json::parse_event_t::object_end && !open_objects.empty()) open_objects.pop_back();
          if (event == json::parse_event_t::key && !open_objects.empty() &&
              !open_objects.back().insert(parsed.get<std::string>()).second) {
            throw HttpError{400, "key '" + clipped(parsed.get<std::string>()) + "' given twice in the request body"};
          }
          return true;
        },
        /*allow_exceptions=*/false);
    if (body.is_discarded()) throw HttpError{400, "request body is not valid JSON"};
    return body;
  }

  void recommendGet(const HttpRequest& req, const HttpReply& reply) {
    // A misspelt parameter ("K=1") would otherwise be answered with the default, as if it had been read.
    for (const auto& [name, value] : req.query) {
      if (name != "item" && name != "k") {
        throw HttpError{400, "unknown query parameter '" + clipped(name) + "' (the query may hold 'item' and 'k')"};
      }
    }
    // A repeated `item` is a basket, as the POST form's list is.
    const std::vector<std::string> items = req.params("item");
    if (items.empty()) throw HttpError{400, "missing query parameter 'item'"};
    if (std::any_of(items.begin(), items.end(), [](const std::string& i) { return i.empty(); })) {
      throw HttpError{400, "query parameter 'item' is empty"};
    }
    if (items.size() > static_cast<size_t>(kMaxBasketItems)) {
      throw HttpError{400, "at most " + std::to_string(kMaxBasketItems) + " 'item' parameters"};
    }
    const std::vector<std::string> k = req.params("k");
    if (k.size() > 1) throw HttpError{400, "query parameter 'k' given " + std::to_string(k.size()) + " times"};
    recommend(items, k.empty() ? 10 : parseK(k.front()), reply);
  }

  void recommendPost(const HttpRequest& req, const HttpReply& reply) {
    refuseQueryParameters(req, "'items' and 'k'");
    const json body = parseRequestBody(req.body);
    if (!body.is_object() || !body.contains("items") || !body["items"].is_array()) {
      throw HttpError{400, "expected a JSON object {\"items\": [\"TOKEN\", ...], \"k\": 10}"};
    }
    for (const auto& [key, value] : body.items()) {
      if (key != "items" && key != "k") {
        throw HttpError{400, "unknown key '" + clipped(key) + "' (the body may hold 'items' and 'k')"};
      }
    }
    const json& list = body["items"];
    if (list.empty() || list.size() > static_cast<size_t>(kMaxBasketItems)) {
      throw HttpError{400, "'items' must hold 1.." + std::to_string(kMaxBasketItems) + " tokens"};
    }
    std::vector<std::string> items;
    for (const auto& v : list) {
      if (!v.is_string()) throw HttpError{400, "'items' must be strings"};
      // As the GET form says it: no token is empty, so this is a client's slip, not an unknown item.
      if (v.get<std::string>().empty()) throw HttpError{400, "'items' holds an empty string"};
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
    recommend(items, k, reply);
  }

  void adminReload(const HttpRequest& req, const HttpReply& reply) {
    if (options.admin_token.empty()) throw HttpError{404, "admin endpoints are disabled (serve.admin_token is empty)"};
    // Which one counts would be a guess (the first, where a proxy may have added its own after it): refused.
    if (req.authorization_count > 1) {
      throw HttpError{400, "'Authorization' given " + std::to_string(req.authorization_count) + " times"};
    }
    const std::string expected = "Bearer " + options.admin_token;
    const std::string& given = req.authorization;
    // Compare in time independent of where the strings differ.
    unsigned diff = given.size() != expected.size();
    for (size_t i = 0; i < std::min(given.size(), expected.size()); ++i) diff |= given[i] ^ expected[i];
    if (diff != 0) throw HttpError{401, "missing or wrong 'Authorization: Bearer <token>'"};
    refuseQueryParameters(req, "'model'");
    std::string path;
    if (!req.body.empty()) {
      const json body = parseRequestBody(req.body);
      if (!body.is_object()) throw HttpError{400, "request body is not a JSON object"};
      // A misspelt key ("modle") would otherwise reload the current model and answer 200.
      for (const auto& [key, value] : body.items()) {
        if (key != "model") throw HttpError{400, "unknown key '" + clipped(key) + "' (the body may hold 'model')"};
      }
      if (body.contains("model")) {
        // "" would read as "the file serving now": said by leaving the key out, not by an empty path.
        if (!body["model"].is_string() || body["model"].get<std::string>().empty()) {
          throw HttpError{400, "'model' must be a path (leave it out to reload the file serving now)"};
        }
        path = body["model"].get<std::string>();
        // The system would read the path up to its first NUL: another file than the one named and answered.
        if (path.find('\0') != std::string::npos) throw HttpError{400, "'model' holds a NUL character"};
      }
    }
    admin->post(
        [this, path, reply] {
          answer(reply, [&] {
            const uint64_t version = reload(path);
            reply(jsonResponse(json{{"status", "ok"}, {"model_version", version}, {"model", current()->path}}));
          });
        },
        [reply] { reply(errorResponse(503, "the server is stopping; the reload did not run")); });
  }

  // Runs `work`, which replies itself; what it throws becomes the reply instead.
  template <typename F>
  void answer(const HttpReply& reply, F work) {
    try {
      work();
    } catch (const HttpError& e) {
      return reply(errorResponse(e.status, e.message, e.allow));
    } catch (const DataError& e) {
      return reply(errorResponse(422, e.what()));
    } catch (const std::exception& e) {
      error("serve: {}", e.what());
      return reply(errorResponse(500, "internal error"));
    } catch (...) {
      error("serve: unknown exception");
      return reply(errorResponse(500, "internal error"));
    }
  }

  // Every request, on an HTTP I/O thread.
  void handle(const HttpRequest& req, const HttpReply& reply) {
    answer(reply, [&] {
      // HEAD is answered as GET; the HTTP layer sends its headers without the body.
      const bool get = req.method == "GET" || req.method == "HEAD", post = req.method == "POST";
      if (req.path == "/recommend" && get) return recommendGet(req, reply);
      if (req.path == "/recommend" && post) return recommendPost(req, reply);
      if (req.path == "/admin/reload" && post) return adminReload(req, reply);
      if (req.path == "/healthz" && get) {
        const auto m = current();
        return reply(jsonResponse(json{{"status", "ok"},
                                       {"model_version", m->version},
                                       {"items", m->rows},
                                       {"dim", m->dim},
                                       {"index", options.index},
                                       {"model", m->path}}));
      }
      if (req.path == "/metrics" && get) {
        return reply({200, "text/plain; version=0.0.4", metrics.render(batcher->depth(), cache.size(), cache.bytes())});
      }
      if (const std::string endpoint = endpointOf(req.path); endpoint != "other") {
        throw HttpError{405, req.method + " is not allowed on " + req.path, methodsOf(endpoint)};
      }
      throw HttpError{404, "no such endpoint"};
    });
  }

  // `seen` is what the directory held before the first load (Server's constructor): not new, while an export
  // that appeared or changed during that load is. Afterwards an export that appears or changes is loaded,
  // whatever its modification time (cp -p, rsync -t and tar keep old ones), once it stayed the same for one
  // interval (the writer is done); of several, the newest that loads, as at start: a broken newest one must
  // not hide a good one that came with it. A removed export is no reason to load another: what serves keeps
  // serving.
  void watch(ExportListing seen) {
    const auto interval = std::chrono::milliseconds(options.watch_interval_ms);
    ExportListing last;  // the previous poll's listing
    std::unique_lock<std::mutex> lock(watch_mu);
    while (!watch_cv.wait_for(lock, interval, [&] { return watch_stop; })) {
      lock.unlock();
      const ExportListing now = listExports(options.watch_dir);
      const auto arrivedSinceSeen = [&](const ExportFile& f) {
        const auto before = seen.find(f.path);
        return before == seen.end() || before->second != f;
      };
      const auto sameAsLastPoll = [&](const ExportFile& f) {
        const auto before = last.find(f.path);
        return before != last.end() && before->second == f;
      };
      const std::vector<ExportFile> arrived = newestFirst(now, arrivedSinceSeen);
      // Once the newest arrival stayed the same for an interval: it and the others that did, newest first.
      if (arrived.empty() || sameAsLastPoll(arrived.front())) {
        bool loaded = false;
        for (const ExportFile& file : arrived) {
          if (!sameAsLastPoll(file)) continue;  // still being written
          if (stopRequested()) break;
          try {
            reload(file.path);
            loaded = true;
            break;
          } catch (const std::exception&) {
            // reload() logged and counted it; the next newest that arrived may load, else the old model
            // keeps serving until another export arrives.
          }
        }
        // What is there now is seen (removed files are forgotten: one coming back under the same name is
        // new), except, when nothing loaded, an arrival still being written: it is tried once it settles.
        // After a load, older arrivals are passed over: they are not the newest.
        ExportListing next = now;
        for (const auto& [path, file] : now) {
          if (loaded || !arrivedSinceSeen(file) || sameAsLastPoll(file)) continue;
          if (const auto before = seen.find(path); before != seen.end()) {
            next[path] = before->second;
          } else {
            next.erase(path);
          }
        }
        seen = std::move(next);
      }
      last = now;
      lock.lock();
    }
  }

  bool stopRequested() {
    std::lock_guard<std::mutex> lock(watch_mu);
    return watch_stop;
  }
};

Server::Server(const config::ServeOptions& options, const std::string& model_path, const std::string& items_path)
    : impl_(std::make_unique<Impl>(options)) {
  checkScorerSimdSetting();  // a misspelt cap would silently pick another kernel
  impl_->model_path = model_path;
  impl_->items_path = items_path;
  // A watched path that is a file would never show an export: no hot swap, and no word of it. One that does
  // not exist yet may be a trainer's output directory to come: said, and watched for.
  if (!options.watch_dir.empty()) {
    std::error_code ec;
    const bool exists = std::filesystem::exists(options.watch_dir, ec);
    RT_CHECK_T(ConfigError, !exists || std::filesystem::is_directory(options.watch_dir, ec), "serve.watch_dir ",
               options.watch_dir, ": not a directory");
    if (!exists) warn("serve: serve.watch_dir {} does not exist yet; exports will be taken once it does", options.watch_dir);
  }
  // Listed before the first load, so that an export arriving while it runs (seconds, for a large model) is
  // new to the watcher.
  if (!options.watch_dir.empty()) impl_->watch_start = listExports(options.watch_dir);
  impl_->loadInitial();
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
  s.admin = std::make_unique<AdminWorker>();
  // serve.threads used to count workers that each held a connection; event loops beyond the cores only
  // compete for them.
  if (const unsigned cores = std::thread::hardware_concurrency(); cores > 0 && s.options.threads > static_cast<int>(2 * cores)) {
    warn("serve: serve.threads {} starts {} HTTP event loops on {} cores; each serves any number of connections, "
         "so about one per core is enough", s.options.threads, s.options.threads, cores);
  }
  HttpServerOptions http;
  http.host = s.options.host;
  http.port = s.options.port;
  http.threads = s.options.threads;
  http.max_body_bytes = static_cast<uint64_t>(s.options.max_body_bytes);
  http.handler_timeout = kScoreTimeout;
  http.handler_timeout_for = [](const std::string& path) -> std::chrono::milliseconds {
    if (path.rfind("/admin/", 0) == 0) return kAdminTimeout;
    return kScoreTimeout;
  };
  http.stop_timeout = kScoreTimeout + std::chrono::seconds(5);
  s.http = std::make_unique<HttpServer>(
      http, [this](const HttpRequest& req, HttpReply reply) { impl_->handle(req, reply); },
      [this](int status, const std::string&, const std::string& detail) {
        return errorResponse(status, detail.empty() ? layerMessage(status) : layerMessage(status) + ": " + detail);
      },
      [this](const std::string& path, int status, double seconds) {
        // /recommend's latency histogram covers request read to answer ready, batching wait included.
        const std::string endpoint = endpointOf(path);
        impl_->metrics.request(endpoint, status, endpoint == "recommend" ? seconds : 0.0);
      });
  s.http->start();
  if (!s.options.watch_dir.empty()) {
    s.watcher = std::thread([this, initial = std::move(s.watch_start)] { impl_->watch(initial); });
  }
  // Which scorer answers, since the exact one picks its path from the CPU and the catalog: an 8-bit pass
  // needs AVX512-VNNI and a catalog its error bound covers (scorer.h), else every query takes the fp32 scan.
  const std::shared_ptr<const Model> m = s.current();
  const std::string scorer = m->ann                 ? std::string("faiss")
                             : m->packed.hasInt8() ? std::string("exact, 8-bit pass + fp32 rescoring")
                                                   : fmt::format("exact, fp32 ({})", simdKernelName());
  info("serve: listening on {} (model version {}, {} HTTP I/O threads, {} scoring threads, max_batch {}, scorer {})",
       url(), modelVersion(), s.options.threads, s.options.score_threads, s.options.max_batch, scorer);
}

int Server::port() const { return impl_->http ? impl_->http->port() : -1; }

std::string Server::url() const {
  const std::string& host = impl_->options.host;
  if (host.find(':') != std::string::npos) return fmt::format("http://[{}]:{}", host, port());  // IPv6
  return fmt::format("http://{}:{}", host, port());
}

bool Server::running() const { return impl_->http && impl_->http->running(); }

void Server::stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.stop_mu);
  if (!s.started || s.stopped) return;
  s.stopped = true;
  // Reloads still queued are answered 503, not run (their clients may be long gone); one running finishes
  // (it replies before the HTTP layer closes, or within its stop_timeout).
  if (s.admin) s.admin->cancelQueued();
  // Requests waiting to fill a batch are scored now (serve.max_wait_us may be long), while the watcher
  // below finishes a reload it may be running.
  if (s.batcher) s.batcher->drain();
  {
    std::lock_guard<std::mutex> wl(s.watch_mu);
    s.watch_stop = true;
  }
  s.watch_cv.notify_all();
  if (s.watcher.joinable()) s.watcher.join();
  // Stop accepting and answer the requests in flight, which still have a running (draining) batcher.
  if (s.http) s.http->stop();
  if (s.admin) s.admin->stop();
  if (s.batcher) s.batcher->stop();
  info("serve: stopped");
}

uint64_t Server::modelVersion() const { return impl_->current()->version; }

uint64_t Server::reload(const std::string& path) { return impl_->reload(path); }

}  // namespace ringtrain::serve
