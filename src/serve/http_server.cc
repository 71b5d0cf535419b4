// Event-driven HTTP/1.1 on Boost.Beast; the contract is in http_server.h.
//
// Lifetimes. Each connection is an HttpSession on a strand of its own. It is kept alive by its pending
// asynchronous operation and, while a request waits for its answer, by the HttpReply the handler holds.
// Every session holds the server's Impl, so a reply that outlives HttpServer (a job still queued in the
// batcher) finds a mutex to check rather than freed memory. A work guard keeps the I/O threads running
// until stop() has drained the requests in flight, refused replies from then on and closed every
// connection; after the join, whatever was still queued runs once on the stopping thread, so no handler
// (and no session holding the Impl) is left in the io_context.
#include "serve/http_server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::serve {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr uint32_t kMaxHeaderBytes = 8 * 1024;

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits "a=1&b=x%20y" into decoded pairs; false on a malformed escape.
// Decodes the query into `out`: "" when it decodes, else why not, naming the component (cut to 100 bytes:
// the answer should not echo a megabyte someone sent).
std::string parseQuery(std::string_view text, std::multimap<std::string, std::string>& out) {
  const auto malformed = [](std::string_view component) {
    constexpr size_t kShown = 100;
    return "malformed percent-escape in the query's '" + std::string(component.substr(0, kShown)) +
           (component.size() > kShown ? "..." : "") + "' (a '%' comes before two hexadecimal digits)";
  };
  while (!text.empty()) {
    const size_t amp = text.find('&');
    const std::string_view pair = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    std::string name, value;
    if (!decodeQueryComponent(pair.substr(0, eq), name)) return malformed(pair.substr(0, eq));
    if (eq != std::string_view::npos && !decodeQueryComponent(pair.substr(eq + 1), value)) {
      return malformed(pair.substr(eq + 1));
    }
    out.emplace(std::move(name), std::move(value));  // a multimap keeps a repeated name's values in order
  }
  return "";
}

}  // namespace

bool decodeQueryComponent(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out.push_back(' ');
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hexValue(in[i + 1]), lo = hexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return true;
}

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
  HttpServerOptions options;
  Handler handler;
  ErrorHandler on_error;
  AnswerObserver on_answer;

  std::mutex stop_mu;  // serializes stop()
  std::mutex sessions_mu;
  std::unordered_map<const HttpSession*, std::weak_ptr<HttpSession>> sessions;  // guarded by sessions_mu

  std::mutex state_mu;
  std::condition_variable state_cv;
  int64_t in_flight = 0;          // requests read and not yet answered (written or failed); guarded by state_mu
  bool accepting_replies = true;  // guarded by state_mu: false once stop() gave up on requests in flight
  int threads_running = 0;        // guarded by state_mu
  std::atomic<bool> stopping{false};
  std::atomic<bool> running{false};

  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;  // reset by stop()
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer accept_retry{acceptor.get_executor()};
  // On the acceptor's strand: the accept failures not yet reported, and when the last report was.
  int64_t accept_failures = 0;
  std::chrono::steady_clock::time_point last_accept_warning{};
  std::vector<std::thread> threads;
  int port = -1;

  Impl(HttpServerOptions o, Handler h, ErrorHandler e, AnswerObserver a)
      : options(std::move(o)), handler(std::move(h)), on_error(std::move(e)), on_answer(std::move(a)),
        ioc(std::max(1, options.threads)) {}

  void accept();
  void requestStarted() {
    std::lock_guard<std::mutex> lock(state_mu);
    ++in_flight;
  }
  void requestFinished() {
    std::lock_guard<std::mutex> lock(state_mu);
    if (--in_flight == 0) state_cv.notify_all();
  }
  // on_error's answer, or a plain one if it throws.
  HttpResponse layerAnswer(int status, const std::string& path, const std::string& detail = "") noexcept {
    try {
      return on_error(status, path, detail);
    } catch (...) {
      return {status, "text/plain", ""};
    }
  }
  std::chrono::milliseconds deadlineFor(const std::string& path) const {
    return options.handler_timeout_for ? options.handler_timeout_for(path) : options.handler_timeout;
  }
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(std::shared_ptr<HttpServer::Impl> server, tcp::socket socket)
      : server_(std::move(server)), stream_(std::move(socket)), timer_(stream_.get_executor()) {}

  ~HttpSession() {
    std::lock_guard<std::mutex> lock(server_->sessions_mu);
    server_->sessions.erase(this);
  }

  void start() {
    {
      std::lock_guard<std::mutex> lock(server_->sessions_mu);
      server_->sessions.emplace(this, weak_from_this());
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(/*first=*/true); });
  }

  // From any thread: closes the connection on its strand (stop()).
  void closeSoon() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  // From any thread: queues an answer for request `generation` on the strand, unless stop() gave up.
  void deliver(uint64_t generation, HttpResponse response) {
    std::lock_guard<std::mutex> lock(server_->state_mu);
    if (!server_->accepting_replies) return;
    net::post(stream_.get_executor(), [self = shared_from_this(), generation, r = std::move(response)]() mutable {
      self->answer(generation, std::move(r));
    });
  }

 private:
  void read(bool first) {
    if (server_->stopping.load()) return close();
    parser_.emplace();
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->header_limit(kMaxHeaderBytes);
    stream_.expires_after(first ? server_->options.io_timeout : server_->options.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->onRead(ec); });
  }

  void onRead(beast::error_code ec) {
    if (ec) {
      // A request the layer refuses itself gets an answer; a closed, reset or idle connection just ends.
      int status = 0;
      if (ec == http::error::body_limit) status = 413;
      else if (ec == http::error::header_limit) status = 431;
      else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message)
        status = 400;
      if (status == 0) return close();
      // The request line may have been read (a body over the limit is refused from its Content-Length).
      // A request line over the header limit was not: its start is still in the buffer.
      const bool line_read = !parser_->get().target().empty();
      path_ = pathOf(view(parser_->get().target()));
      if (status == 431 && !line_read) path_ = pathOfUnreadRequestLine(bufferText());
      version_ = parser_->get().version();
      // An answer to HEAD has no body, whatever its status.
      head_ = line_read ? parser_->get().method() == http::verb::head
                        : status == 431 && bufferText().rfind("HEAD ", 0) == 0;
      keep_alive_ = false;
      return startRequest([&](HttpReply reply) { reply(server_->layerAnswer(status, path_)); });
    }
    auto req = parser_->release();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    head_ = req.method() == http::verb::head;
    // Only "chunked" is read as a body. Another coding leaves the body's length unknown (RFC 9112 6.3: 400,
    // and close): read on, its bytes would be taken for the next request.
    if (const auto te = req.find(http::field::transfer_encoding); te != req.end() && !onlyChunked(view(te->value()))) {
      path_ = pathOf(view(req.target()));
      head_ = false;
      keep_alive_ = false;
      return startRequest([&](HttpReply reply) { reply(server_->layerAnswer(400, path_)); });
    }
    HttpRequest request;
    request.method = std::string(req.method_string());
    const std::string_view target = originForm(view(req.target()));
    const size_t q = target.find('?');
    request.path = std::string(target.substr(0, q));
    path_ = request.path;
    const std::string query_error = q == std::string_view::npos ? "" : parseQuery(target.substr(q + 1), request.query);
    if (const auto it = req.find(http::field::authorization); it != req.end()) request.authorization = std::string(view(it->value()));
    request.authorization_count = static_cast<int>(req.count(http::field::authorization));
    request.body = std::move(req.body());
    startRequest([&](HttpReply reply) {
      if (!query_error.empty()) return reply(server_->layerAnswer(400, request.path, query_error));
      try {
        server_->handler(request, reply);
      } catch (const std::exception& e) {
        error("serve: {} {}: {}", request.method, request.path, e.what());
        reply(server_->layerAnswer(500, request.path));
      } catch (...) {
        error("serve: {} {}: unknown exception", request.method, request.path);
        reply(server_->layerAnswer(500, request.path));
      }
    });
  }

  static std::string pathOf(std::string_view target) {
    target = originForm(target);
    return std::string(target.substr(0, target.find('?')));
  }

  std::string_view bufferText() const {
    const auto bytes = buffer_.data();
    return {static_cast<const char*>(bytes.data()), bytes.size()};
  }

  // The path of a request line the parser refused unread ("GET /recommend?item=a&item=b..." over the
  // header limit), where the bytes at hand hold all of it: the metrics then count the refusal under its
  // endpoint. Empty when the path itself runs past them.
  static std::string pathOfUnreadRequestLine(std::string_view bytes) {
    const size_t method_end = bytes.find_first_of(" \r\n");
    if (method_end == std::string_view::npos || bytes[method_end] != ' ') return {};
    std::string_view target = bytes.substr(method_end + 1);
    const size_t target_end = target.find_first_of(" \r\n");
    if (target_end != std::string_view::npos) return pathOf(target.substr(0, target_end));
    if (originForm(target).find('?') == std::string_view::npos) return {};  // cut off inside the path
    return pathOf(target);
  }

  // A target in absolute form ("http://host:8080/recommend?item=a", which a server must accept, RFC 9112
  // 3.2.2) as the origin form the handler reads ("/recommend?item=a"); any other target as it is.
  static std::string_view originForm(std::string_view target) {
    for (const std::string_view scheme : {"http://", "https://"}) {
      if (target.size() >= scheme.size() &&
          beast::iequals(beast::string_view(target.data(), scheme.size()), beast::string_view(scheme.data(), scheme.size()))) {
        const std::string_view rest = target.substr(scheme.size());
        const size_t path = rest.find_first_of("/?");  // the end of the authority
        return path == std::string_view::npos ? std::string_view("/") : rest.substr(path);
      }
    }
    return target;
  }

  // Whether a Transfer-Encoding value is the one coding "chunked" (any case, spaces around it).
  static bool onlyChunked(std::string_view value) {
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    return beast::iequals(beast::string_view(value.data(), value.size()), "chunked");
  }

  // Counts the request in flight, arms its deadline and hands `run` the reply for it.
  template <typename F>
  void startRequest(F run) {
    const uint64_t generation = ++generation_;
    answered_ = false;
    started_ = std::chrono::steady_clock::now();
    server_->requestStarted();
    timer_.expires_after(server_->deadlineFor(path_));
    timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
      if (!ec && generation == self->generation_ && !self->answered_) {
        self->answer(generation, self->server_->layerAnswer(503, self->path_));
      }
    });
    run(HttpReply([self = shared_from_this(), generation](HttpResponse r) { self->deliver(generation, std::move(r)); }));
  }

  // On the strand: writes the first answer of the current request; a late or second one is dropped.
  void answer(uint64_t generation, HttpResponse r) {
    if (generation != generation_ || answered_) return;
    answered_ = true;
    timer_.cancel();
    try {
      build(r);
    } catch (const std::exception& e) {  // a status Beast refuses, a body on a 204 or 304, ...
      error("serve: answer {} to {} could not be built: {}", r.status, path_, e.what());
      r = {500, "text/plain", "internal error"};
      build(r);
    }
    if (server_->on_answer) {
      try {
        server_->on_answer(path_, r.status,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
      } catch (...) {
        // Metrics must not cost the client its answer.
      }
    }
    stream_.expires_after(server_->options.io_timeout);
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->server_->requestFinished();
      if (ec) return self->close();
      if (!self->response_.keep_alive()) return self->drainThenClose();
      self->read(false);
    });
  }

  void build(const HttpResponse& r) {
    response_ = {};
    response_.version(version_);
    response_.result(static_cast<unsigned>(r.status >= 100 && r.status <= 599 ? r.status : 500));
    response_.set(http::field::content_type, r.content_type);
    if (!r.allow.empty()) response_.set(http::field::allow, r.allow);
    response_.body() = r.body;
    response_.keep_alive(keep_alive_ && !server_->stopping.load());
    response_.prepare_payload();
    if (head_) response_.body().clear();  // the headers (Content-Length included) without the body
  }

  // After an answer that ends the connection (an error mid-request, HTTP/1.0, stop()), the client may still
  // be sending: closing with its bytes unread would reset the connection and could destroy the answer in
  // its receive queue. Stop sending, read and discard for up to a second, then close.
  void drainThenClose() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    drain_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    drain();
  }
  void drain() {
    const auto left = drain_deadline_ - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return close();
    stream_.expires_after(left);
    buffer_.consume(buffer_.size());
    stream_.async_read_some(buffer_.prepare(64 * 1024), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->buffer_.commit(n);
      if (ec) return self->close();
      self->drain();
    });
  }

  void close() {
    timer_.cancel();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  std::shared_ptr<HttpServer::Impl> server_;  // first: outlives the socket and timer below
  beast::tcp_stream stream_;
  net::steady_timer timer_;  // the handler's deadline
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  // The request being answered (strand only).
  uint64_t generation_ = 0;
  bool answered_ = true;
  bool head_ = false;
  std::string path_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point drain_deadline_;
  bool keep_alive_ = false;
  unsigned version_ = 11;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (self->stopping.load() || ec == net::error::operation_aborted) return;
    if (ec) {
      // Out of file descriptors, typically: try again shortly instead of spinning, and say so once per
      // 10 s rather than at every retry.
      const auto now = std::chrono::steady_clock::now();
      ++self->accept_failures;
      if (now - self->last_accept_warning >= std::chrono::seconds(10)) {
        warn("serve: accept failed: {} (retrying every 50 ms; {} failure(s) since the previous warning)", ec.message(),
             self->accept_failures);
        self->last_accept_warning = now;
        self->accept_failures = 0;
      }
      self->accept_retry.expires_after(std::chrono::milliseconds(50));
      self->accept_retry.async_wait([self](beast::error_code e) {
        if (!e) self->accept();
      });
      return;
    }
    std::make_shared<HttpSession>(self, std::move(socket))->start();
    self->accept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler, ErrorHandler on_error, AnswerObserver on_answer)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(handler), std::move(on_error), std::move(on_answer))) {}

HttpServer::~HttpServer() { stop(); }

namespace {

// Opens `acceptor` on host:port: bound (SO_REUSEADDR lets a restart bind while old connections sit in
// TIME_WAIT; without SO_REUSEPORT a second server on a port in use fails here instead of silently splitting
// the connections) and listening with the kernel's largest backlog (a burst of connects, wrk's 64 or a
// proxy filling its pool, must not find a full accept queue, or the surplus waits for TCP retransmits, a
// second and more). On failure the socket is closed at once, not when the acceptor goes: bound, if only
// listen failed, it would hold the port, and a start() retried once it is free would find it still open.
void listenOn(net::io_context& ioc, tcp::acceptor& acceptor, const std::string& host, int port) {
  const auto where = [&] { return host + ":" + std::to_string(port); };
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  const auto endpoints =
      resolver.resolve(host, std::to_string(port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) RT_THROW(ConfigError, "serve: cannot resolve ", where(), ": ", ec.message());
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignored;
    acceptor.close(ignored);
    RT_THROW(ConfigError, "serve: cannot listen on ", where(), ": ", ec.message(),
             " (address in use or not local? see serve.host / serve.port)");
  }
}

}  // namespace

void HttpServer::checkCanListen(const std::string& host, int port) {
  net::io_context ioc;
  tcp::acceptor acceptor(ioc);
  listenOn(ioc, acceptor, host, port);
  beast::error_code ignored;
  acceptor.close(ignored);
}

void HttpServer::start() {
  Impl& s = *impl_;
  RT_CHECK(!s.running.load() && !s.stopping.load(), "HttpServer::start() called twice");
  listenOn(s.ioc, s.acceptor, s.options.host, s.options.port);
  s.port = s.acceptor.local_endpoint().port();
  s.work.emplace(net::make_work_guard(s.ioc));
  s.accept();
  s.running = true;
  const int n = std::max(1, s.options.threads);
  for (int i = 0; i < n; ++i) {
    {  // counted per thread started: a refused start (EAGAIN) leaves stop() no count that cannot reach 0
      std::lock_guard<std::mutex> lock(s.state_mu);
      ++s.threads_running;
    }
    try {
      s.threads.emplace_back([impl = impl_] {
        while (true) {
          try {
            impl->ioc.run();
            break;
          } catch (const std::exception& e) {  // handlers catch their own; this is the last line
            error("serve: HTTP I/O thread: {}", e.what());
          } catch (...) {
            error("serve: HTTP I/O thread: unknown exception");
          }
        }
        std::lock_guard<std::mutex> lock(impl->state_mu);
        if (--impl->threads_running == 0) impl->state_cv.notify_all();
      });
    } catch (...) {
      std::lock_guard<std::mutex> lock(s.state_mu);
      --s.threads_running;
      throw;
    }
  }
}

int HttpServer::port() const { return impl_->port; }

bool HttpServer::running() const { return impl_->running.load(); }

void HttpServer::stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> serial(s.stop_mu);
  if (s.threads.empty() || s.stopping.exchange(true)) return;
  net::post(s.acceptor.get_executor(), [impl = impl_] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->accept_retry.cancel();
  });
  std::unique_lock<std::mutex> lock(s.state_mu);
  if (!s.state_cv.wait_for(lock, s.options.stop_timeout, [&] { return s.in_flight == 0; })) {
    warn("serve: {} requests still unanswered after {} ms; closing their connections", s.in_flight,
         s.options.stop_timeout.count());
  }
  s.accepting_replies = false;
  lock.unlock();
  // Idle keep-alive connections wait in a read: close them so the I/O threads run out of work.
  std::vector<std::shared_ptr<HttpSession>> open;
  {
    std::lock_guard<std::mutex> l(s.sessions_mu);
    for (auto& [raw, weak] : s.sessions) {
      if (auto session = weak.lock()) open.push_back(std::move(session));
    }
  }
  for (auto& session : open) session->closeSoon();
  open.clear();
  s.work.reset();  // the threads return once the closes (and anything they set off) have run
  lock.lock();
  if (!s.state_cv.wait_for(lock, std::chrono::seconds(10), [&] { return s.threads_running == 0; })) {
    warn("serve: HTTP I/O threads still busy 10 s after stop; stopping their event loop");
    s.ioc.stop();
  }
  lock.unlock();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
  // Whatever was queued after the threads left (or left behind by the fallback) runs here, so no handler
  // keeps a session, and through it this Impl, alive.
  s.ioc.restart();
  s.ioc.poll();
  s.running = false;
}

}  // namespace ringtrain::serve
