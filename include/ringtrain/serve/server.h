// The recommendation server behind `ringtrain serve` (HTTP/1.1 + JSON; the HTTP layer is
// src/serve/http_server.h, on Boost.Beast).
//
//   GET  /recommend?item=TOKEN&k=10        nearest items to one item
//   POST /recommend {"items": [...], "k": 10}   nearest items to a basket (mean of its unit vectors)
//   GET  /healthz                           {"status":"ok","model_version":V,...}
//   GET  /metrics                           Prometheus text format
//   POST /admin/reload [{"model": PATH}]    needs "Authorization: Bearer <serve.admin_token>"; disabled
//                                           when the token is empty
//
// Threads: HTTP I/O threads (serve.threads, each an event loop over any number of keep-alive connections)
// parse requests, look the result up in the cache, and otherwise put the query on a bounded queue (full:
// HTTP 429) and go on with other connections; scoring workers (serve.score_threads) each take up to
// serve.max_batch queued queries, waiting at most serve.max_wait_us for the batch to fill, score them with
// one pass over the catalog, and answer each query's connection. Reloads asked for over HTTP run on an admin
// thread of their own, and a watcher thread polls serve.watch_dir. The model is immutable and
// reached through an atomically swapped std::shared_ptr<const Model>: a request keeps the snapshot it
// started with, so a swap never changes an answer half way, and nothing locks while scoring.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ringtrain/config/config.h"

namespace ringtrain::serve {

inline constexpr int kMaxK = 1000;           // larger k -> HTTP 400
inline constexpr int kMaxBasketItems = 1000;  // larger baskets -> HTTP 400

class Server {
 public:
  // Loads and validates the model (throws DataError); items_path "" means items.tsv beside the model if
  // present. Starts nothing yet.
  Server(const config::ServeOptions& options, const std::string& model_path, const std::string& items_path);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds serve.host:serve.port (port 0: a free one) and starts all threads; throws ConfigError when the
  // address cannot be bound.
  void start();
  // The bound port (after start()).
  int port() const;
  // "http://HOST:PORT" (after start()), an IPv6 host in brackets ("http://[::1]:8080").
  std::string url() const;
  // Answers queued reloads 503 (one running finishes), stops accepting, finishes requests in flight, joins
  // every thread. Idempotent.
  void stop();
  // False once the HTTP listener has ended (stop() or a listener failure).
  bool running() const;

  // Version of the model now serving.
  uint64_t modelVersion() const;
  // Loads a model (path "": the file serving now, read again), validates it and swaps it in; returns the new
  // version. A broken model, or a path that is not a regular file, throws DataError and the old one keeps
  // serving. Reloads are serialized.
  uint64_t reload(const std::string& path = "");

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringtrain::serve
