// The server's HTTP/1.1 layer: an event-driven listener on Boost.Beast. A few I/O threads (serve.threads)
// each run an event loop over any number of keep-alive connections, so a waiting client holds no thread and
// a request costs no thread hand-off of its own: a connection's request goes to the handler on the I/O
// thread that read it, and the answer may come later from any thread (the scoring workers reply when a
// batch is done). Boost stays inside http_server.cc.
//
// What the layer answers itself, through `on_error` so the body is the caller's: a body over the limit
// (413), a header block over 8 KiB (431), an unparsable request or query string (400), a handler that
// threw (500), and a handler that has not replied within its deadline (503; its late reply is dropped).
// A request, body included, must arrive within `io_timeout` of the connection opening and within
// `idle_timeout` of the previous answer on a kept-alive connection; writing an answer has `io_timeout`.
// After an answer that ends the connection, unread request bytes are drained for up to a second before
// the close, so that the client reads the answer instead of a reset. HEAD gets the headers only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ringtrain::serve {

class HttpSession;

struct HttpRequest {
  std::string method;                        // "GET", "POST", ...
  std::string path;                          // target before '?', not decoded
  std::multimap<std::string, std::string> query;  // decoded parameters, a repeated name in order
  std::string authorization;                      // the Authorization header, "" when absent
  int authorization_count = 0;                    // how many Authorization headers came (more than 1: refused)
  std::string body;

  // The first value of the decoded parameter, or nullptr.
  const std::string* param(const std::string& name) const {
    const auto it = query.find(name);
    return it == query.end() ? nullptr : &it->second;
  }
  // Every value of the parameter, in the order the query gave them.
  std::vector<std::string> params(const std::string& name) const {
    std::vector<std::string> values;
    for (auto [it, end] = query.equal_range(name); it != end; ++it) values.push_back(it->second);
    return values;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string allow = {};  // the Allow header of a 405: the methods the path takes
};

// Answers one request. Call it exactly once, from any thread; calls after the first are ignored.
using HttpReply = std::function<void(HttpResponse)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port
  int threads = 2;
  uint64_t max_body_bytes = 1 << 20;
  std::chrono::milliseconds io_timeout{10'000};
  std::chrono::milliseconds idle_timeout{5'000};
  std::chrono::milliseconds handler_timeout{30'000};
  // A per-path deadline instead (slow admin actions); unset: handler_timeout for every path.
  std::function<std::chrono::milliseconds(const std::string& path)> handler_timeout_for;
  std::chrono::milliseconds stop_timeout{35'000};  // how long stop() waits for requests in flight
};

class HttpServer {
 public:
  // Runs on an I/O thread and must not block it. It may reply at once or keep `reply` and call it later;
  // an exception it throws is answered with on_error(500).
  using Handler = std::function<void(const HttpRequest&, HttpReply)>;
  // The answer for a status the layer decides itself; `path` is "" when the request line was unreadable;
  // `detail` says more where the layer knows it ("malformed percent-escape ..."), else "".
  using ErrorHandler = std::function<HttpResponse(int status, const std::string& path, const std::string& detail)>;
  // Told of every answer as it is handed to the socket (on an I/O thread): the request's path, the
  // status, and the seconds from the request being read to its answer being ready. Only that answer
  // counts: a reply that arrives after the layer answered 503 is neither sent nor reported.
  using AnswerObserver = std::function<void(const std::string& path, int status, double seconds)>;

  HttpServer(HttpServerOptions options, Handler handler, ErrorHandler on_error, AnswerObserver on_answer);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds (SO_REUSEADDR, never SO_REUSEPORT, so a port in use is an error) and listens with the kernel's
  // largest backlog, then starts the I/O threads. Throws ConfigError when the address cannot be bound,
  // having let its socket go: start() may be called again.
  void start();
  // Throws start()'s ConfigError now if host:port cannot be listened on (in use, not local), for a caller
  // with slow work to do before start(). Another process may still take the port in between.
  static void checkCanListen(const std::string& host, int port);
  int port() const;
  bool running() const;
  // Stops accepting, waits (at most stop_timeout) for every request already read to be answered and
  // written, then closes the remaining connections and joins the I/O threads. Idempotent; calls are
  // serialized. Once started, start() is not called again.
  void stop();

 private:
  friend class HttpSession;  // a connection (http_server.cc)
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Decodes a URL query component: %XX and '+' (a space). False on a malformed escape.
bool decodeQueryComponent(std::string_view in, std::string& out);

}  // namespace ringtrain::serve
