// The HTTP layer on its own: replies from other threads, the handler deadline, the statuses it answers
// itself, a stop that waits for requests in flight, and many connections on one I/O thread.
#include "serve/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "ringtrain/core/error.h"

namespace ringtrain::serve {
namespace {

using namespace std::chrono_literals;

struct Answer {
  std::string path;
  int status;
};

// A server whose handler the test sets, recording every answer the layer reports.
class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServer::Handler handler) {
    server_ = std::make_unique<HttpServer>(
        options_, std::move(handler),
        [](int status, const std::string& path, const std::string& detail) {
          return HttpResponse{status, "text/plain",
                              "layer " + std::to_string(status) + " " + path + (detail.empty() ? "" : ": " + detail)};
        },
        [this](const std::string& path, int status, double) {
          std::lock_guard<std::mutex> lock(mu_);
          answers_.push_back({path, status});
        });
    server_->start();
  }
  std::unique_ptr<httplib::Client> client() {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    c->set_connection_timeout(5);
    c->set_read_timeout(20);
    return c;
  }
  std::vector<Answer> answers() {
    std::lock_guard<std::mutex> lock(mu_);
    return answers_;
  }
  // Sends raw bytes on a fresh connection and returns what comes back until the server closes it.
  std::string raw(const std::string& bytes) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
    EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    std::string got;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return got;
  }

  HttpServerOptions options_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::vector<Answer> answers_;  // guarded by mu_
};

TEST_F(HttpServerTest, AnswersFromAnotherThreadOnAKeptAliveConnection) {
  std::vector<std::thread> repliers;
  std::mutex rm;
  start([&](const HttpRequest& req, HttpReply reply) {
    const std::string* who = req.param("who");
    std::string body = req.method + " " + req.path + " " + (who ? *who : "-") + " " + req.body;
    std::lock_guard<std::mutex> lock(rm);
    repliers.emplace_back([reply, body] {
      std::this_thread::sleep_for(20ms);
      reply({200, "text/plain", body});
      reply({500, "text/plain", "a second reply is ignored"});
    });
  });
  // Decoded parameters ('+' is a space; the first of a repeated name wins), raw so no client re-encodes them.
  const std::string decoded = raw("GET /hello?who=a%20b+c&who=ignored HTTP/1.0\r\n\r\n");
  EXPECT_NE(decoded.find("\r\n\r\nGET /hello a b c "), std::string::npos) << decoded;
  auto c = client();
  auto a = c->Get("/again?who=x");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(a->body, "GET /again x ");
  auto b = c->Post("/there", "payload", "text/plain");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->body, "POST /there - payload");
  server_->stop();
  for (auto& t : repliers) t.join();
  const auto seen = answers();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].path, "/hello");
  EXPECT_EQ(seen[2].status, 200);
}

TEST_F(HttpServerTest, AHandlerThatNeverRepliesGets503AndItsLateReplyIsDropped) {
  options_.handler_timeout = 200ms;
  HttpReply kept;
  std::mutex km;
  start([&](const HttpRequest& req, HttpReply reply) {
    if (req.path == "/slow") {
      std::lock_guard<std::mutex> lock(km);
      kept = reply;  // never answered in time
      return;
    }
    reply({200, "text/plain", "ok"});
  });
  auto c = client();
  auto slow = c->Get("/slow");
  ASSERT_TRUE(slow);
  EXPECT_EQ(slow->status, 503);
  EXPECT_EQ(slow->body, "layer 503 /slow");
  {
    std::lock_guard<std::mutex> lock(km);
    ASSERT_TRUE(kept);
    kept({200, "text/plain", "too late"});
  }
  auto next = c->Get("/fast");  // the same connection goes on with the next request
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok");
  const auto seen = answers();
  ASSERT_EQ(seen.size(), 2u);  // the late reply was neither sent nor counted
  EXPECT_EQ(seen[0].status, 503);
  EXPECT_EQ(seen[1].status, 200);
}

TEST_F(HttpServerTest, RefusesOversizedAndMalformedRequestsItself) {
  options_.max_body_bytes = 100;
  std::atomic<int> handled{0};
  std::mutex seen_mu;
  std::string seen_path, seen_query;  // of the last request handled; guarded by seen_mu
  start([&](const HttpRequest& req, HttpReply reply) {
    {
      std::lock_guard<std::mutex> lock(seen_mu);
      seen_path = req.path;
      seen_query = req.param("a") != nullptr ? *req.param("a") : "";
    }
    handled++;
    reply({200, "text/plain", "ok"});
  });
  auto big = client()->Post("/upload?x=1", std::string(1000, 'x'), "text/plain");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(big->body, "layer 413 /upload");
  const std::string garbage = raw("NOT HTTP AT ALL\r\n\r\n");
  EXPECT_NE(garbage.find(" 400 "), std::string::npos) << garbage;
  const std::string bad_escape = raw("GET /p?a=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(bad_escape.find(" 400 "), std::string::npos) << bad_escape;
  // Said why: the component, and what an escape is (it used to be a bare "bad request").
  EXPECT_NE(bad_escape.find("layer 400 /p: malformed percent-escape in the query's '%zz' (a '%' comes before two "
                            "hexadecimal digits)"),
            std::string::npos)
      << bad_escape;
  const std::string huge_header = raw("GET / HTTP/1.1\r\nX-Big: " + std::string(20000, 'h') + "\r\n\r\n");
  EXPECT_NE(huge_header.find(" 431 "), std::string::npos) << huge_header;
  // Refused before the parser read the request line, the path still names the endpoint (its metrics),
  // when the bytes at hand hold all of it.
  const std::string long_query = raw("GET /recommend?item=" + std::string(20000, 'i') + " HTTP/1.1\r\n\r\n");
  EXPECT_NE(long_query.find("layer 431 /recommend"), std::string::npos) << long_query;
  const std::string absolute_query = raw("GET http://h:1/recommend?item=" + std::string(20000, 'i'));
  EXPECT_NE(absolute_query.find("layer 431 /recommend"), std::string::npos) << absolute_query;
  const std::string long_path = raw("GET /" + std::string(20000, 'p') + " HTTP/1.1\r\n\r\n");
  EXPECT_NE(long_path.find(" 431 "), std::string::npos) << long_path;
  // An answer to HEAD has no body, though the layer refused the request: with the request line read (a
  // header over the limit) or not (a request line over it).
  for (const std::string& head : {"HEAD /h HTTP/1.1\r\nX-Big: " + std::string(20000, 'h') + "\r\n\r\n",
                                  "HEAD /h?q=" + std::string(20000, 'q') + " HTTP/1.1\r\n\r\n"}) {
    const std::string answer = raw(head);
    EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer;
    EXPECT_EQ(answer.find("layer"), std::string::npos) << "a body for HEAD: " << answer;
  }
  // A "method" that runs past its line is no request line: what follows it names nothing.
  const std::string no_method = raw(std::string(600, 'G') + "\r\nA: /recommend?" + std::string(20000, 'a'));
  EXPECT_NE(no_method.find(" 4"), std::string::npos) << no_method;
  std::vector<std::string> refused_paths;
  for (const Answer& a : answers()) {
    if (a.status == 431) refused_paths.push_back(a.path);
  }
  EXPECT_THAT(refused_paths, ::testing::Each(::testing::AnyOf("/", "/recommend", "/h", "")));
  EXPECT_EQ(std::count(refused_paths.begin(), refused_paths.end(), "/recommend"), 2) << "a cut-off path named one";
  EXPECT_EQ(std::count(refused_paths.begin(), refused_paths.end(), "/h"), 2);
  EXPECT_EQ(handled.load(), 0);
  // A coding other than chunked leaves the body's length unknown: 400, and closed, rather than a body
  // dropped and its bytes read as a request of their own (smuggling).
  for (const std::string coding : {"gzip", "gzip, chunked"}) {
    const std::string smuggled = raw("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding +
                                     "\r\n\r\nGET /hidden HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(smuggled.rfind("HTTP/1.1 400", 0), 0u) << smuggled;
    EXPECT_EQ(smuggled.find("hidden"), std::string::npos) << smuggled;
  }
  EXPECT_EQ(handled.load(), 0);
  // A target in absolute form (as a proxy sends it) is read as its path and query.
  const std::string absolute = raw("GET http://127.0.0.1:1/x?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(absolute.rfind("HTTP/1.1 200", 0), 0u) << absolute;
  EXPECT_EQ(handled.load(), 1);
  {
    std::lock_guard<std::mutex> lock(seen_mu);
    EXPECT_EQ(seen_path, "/x");
    EXPECT_EQ(seen_query, "1");
  }
  // HTTP/1.0 without keep-alive: answered, then closed (raw() returns only once the server closes).
  const std::string old = raw("GET /x HTTP/1.0\r\n\r\n");
  EXPECT_EQ(old.rfind("HTTP/1.0 200", 0), 0u) << old;
  EXPECT_EQ(handled.load(), 2);
}

TEST_F(HttpServerTest, HeadGetsHeadersOnlyAndAnImpossibleAnswerBecomes500) {
  start([](const HttpRequest& req, HttpReply reply) {
    if (req.path == "/no-content") return reply({204, "text/plain", "a body a 204 cannot carry"});
    if (req.path == "/status") return reply({1234, "text/plain", "no such status"});
    reply({200, "text/plain", "twelve bytes"});
  });
  const std::string head = raw("HEAD /x HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.0 200", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Length: 12"), std::string::npos) << head;
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << "no body after the headers: " << head;
  auto c = client();
  for (const char* path : {"/no-content", "/status"}) {
    auto res = c->Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 500) << path;
  }
  auto ok = c->Get("/fine");  // the connection goes on
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->body, "twelve bytes");
}

// A client still sending a body far over the limit reads the 413 instead of a reset: the server drains
// what is in flight before it closes.
TEST_F(HttpServerTest, AnOversizedUploadStillReadsIts413) {
  options_.max_body_bytes = 1000;
  start([](const HttpRequest&, HttpReply reply) { reply({200, "text/plain", "ok"}); });
  for (int i = 0; i < 3; ++i) {
    auto res = client()->Post("/upload", std::string(8 << 20, 'x'), "application/octet-stream");
    ASSERT_TRUE(res) << "attempt " << i << ": " << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 413);
  }
}

TEST_F(HttpServerTest, StopWaitsForTheRequestInFlight) {
  std::promise<HttpReply> pending;
  start([&](const HttpRequest&, HttpReply reply) { pending.set_value(reply); });
  auto got = std::async(std::launch::async, [&] { return client()->Get("/work"); });
  auto future = pending.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  HttpReply reply = future.get();
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server_->stop();
    stopped = true;
  });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(stopped.load());  // still waiting for the answer
  reply({200, "text/plain", "finished"});
  stopper.join();
  auto res = got.get();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "finished");
  EXPECT_FALSE(server_->running());
  reply({200, "text/plain", "after stop"});  // harmless
}

TEST_F(HttpServerTest, OneIoThreadServesManyKeptAliveClientsAndAnIdleOneBlocksNobody) {
  options_.threads = 1;
  start([&](const HttpRequest& req, HttpReply reply) { reply({200, "text/plain", req.path}); });
  // An idle connection that never sends a request.
  const int idle = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(idle, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 48; ++t) {
    clients.emplace_back([&, t] {
      auto c = client();
      for (int i = 0; i < 5; ++i) {
        const std::string path = "/c" + std::to_string(t) + "/" + std::to_string(i);
        auto res = c->Get(path.c_str());
        if (res && res->status == 200 && res->body == path) ok++;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 48 * 5);
  ::close(idle);
}

TEST_F(HttpServerTest, APortInUseIsAConfigError) {
  start([](const HttpRequest&, HttpReply reply) { reply({}); });
  HttpServerOptions same = options_;
  same.port = server_->port();
  HttpServer second(same, [](const HttpRequest&, HttpReply reply) { reply({}); },
                    [](int status, const std::string&, const std::string&) { return HttpResponse{status, "text/plain", ""}; },
                    nullptr);
  EXPECT_THROW(second.start(), ConfigError);
  // The failed start let its socket go: once the port is free, the same server starts on it.
  server_->stop();
  server_.reset();
  EXPECT_NO_THROW(second.start());
  EXPECT_EQ(second.port(), same.port);
  second.stop();
}

TEST(DecodeQueryComponentTest, PercentEscapesAndPlus) {
  std::string out;
  EXPECT_TRUE(decodeQueryComponent("a%20b+c%2Fd", out));
  EXPECT_EQ(out, "a b c/d");
  EXPECT_TRUE(decodeQueryComponent("", out));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(decodeQueryComponent("%e2%82%AC", out));
  EXPECT_EQ(out, "\xe2\x82\xac");
  EXPECT_FALSE(decodeQueryComponent("%", out));
  EXPECT_FALSE(decodeQueryComponent("abc%2", out));
  EXPECT_FALSE(decodeQueryComponent("%g0", out));
}

}  // namespace
}  // namespace ringtrain::serve
