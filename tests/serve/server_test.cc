// The server end to end over loopback HTTP: correctness under concurrency, hot swap under load, the cache
// across swaps, error codes, and the `ringtrain serve` process itself.
#include "ringtrain/serve/server.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "ringtrain/core/error.h"
#include "ringtrain/serve/model.h"
#include "serve/http_server.h"
#include "serve/serve_fixtures.h"
#include "testing/command.h"

namespace ringtrain::serve {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr int64_t kItems = 3001;
constexpr int64_t kDim = 24;

std::unique_ptr<httplib::Client> client(int port) {
  auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
  c->set_connection_timeout(5);
  c->set_read_timeout(20);
  c->set_write_timeout(5);
  return c;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ringtrain::testing::makeTempDir("serve_server");
    testing::writeExport(path("a.vec"), kItems, kDim, 1);
    testing::writeExport(path("b.vec"), kItems, kDim, 2);
    testing::writeItems(path("items.tsv"), kItems);
    model_a_ = loadModel(path("a.vec"), "");
    model_b_ = loadModel(path("b.vec"), "");
    options_.port = 0;
    options_.threads = 2;  // I/O threads: each serves any number of the clients below
    options_.max_wait_us = 500;
    options_.admin_token = "secret";
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void start(const std::string& model = "") {
    server_ = std::make_unique<Server>(options_, model.empty() ? path("a.vec") : model, "");
    server_->start();
  }

  // Checks one /recommend answer against a brute-force scorer over the model it names.
  void expectCorrect(const json& body, const Model& model, const std::vector<std::string>& query, int k) {
    std::vector<float> q(kDim, 0.0f);
    std::vector<int64_t> exclude;
    for (const auto& t : query) {
      const int64_t r = model.find(t);
      ASSERT_GE(r, 0);
      exclude.push_back(r);
      for (int64_t d = 0; d < kDim; ++d) q[d] += model.row(r)[d];
    }
    double n = 0;
    for (float x : q) n += x * x;
    for (float& x : q) x /= static_cast<float>(std::sqrt(n));
    const auto want = bruteForceTopK(model.row(0), model.rows, kDim, q.data(), k, exclude);
    const auto& items = body.at("items");
    ASSERT_EQ(items.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(items[i].at("score").get<double>(), want[i].score, 1e-4);
      const int64_t r = model.find(items[i].at("item").get<std::string>());
      ASSERT_GE(r, 0);
      double truth = 0;
      for (int64_t d = 0; d < kDim; ++d) truth += static_cast<double>(model.row(r)[d]) * q[d];
      EXPECT_NEAR(items[i].at("score").get<double>(), truth, 1e-4);
    }
  }

  std::string dir_;
  config::ServeOptions options_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<Model> model_a_, model_b_;
};

TEST_F(ServerTest, ConcurrentClientsGetExactTopK) {
  options_.max_batch = 16;
  start();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto c = client(server_->port());
      std::mt19937 rng(t);
      for (int i = 0; i < 40; ++i) {
        const std::string item = "item" + std::to_string(rng() % kItems);
        const int k = 1 + static_cast<int>(rng() % 25);
        auto res = c->Get(("/recommend?item=" + item + "&k=" + std::to_string(k)).c_str());
        if (!res || res->status != 200) {
          failures++;
          continue;
        }
        const json body = json::parse(res->body);
        EXPECT_EQ(body.at("model_version").get<int>(), 1);
        expectCorrect(body, *model_a_, {item}, k);
      }
      // A basket, through POST.
      const std::vector<std::string> basket = {"item" + std::to_string(t), "item" + std::to_string(t + 100)};
      auto res = c->Post("/recommend", json{{"items", basket}, {"k", 7}}.dump(), "application/json");
      if (!res || res->status != 200) {
        failures++;
        return;
      }
      expectCorrect(json::parse(res->body), *model_a_, basket, 7);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto res = client(server_->port())->Get("/recommend?item=item5&k=3");
  ASSERT_TRUE(res);
  const json body = json::parse(res->body);
  EXPECT_EQ(body["items"][0]["name"].get<std::string>().rfind("Name ", 0), 0u);  // names from items.tsv
  EXPECT_EQ(body["query"][0], "item5");
}

TEST_F(ServerTest, RepeatedItemParametersAreABasketAsInPost) {
  start();
  auto c = client(server_->port());
  auto got = c->Get("/recommend?item=item3&item=item8&k=6");
  ASSERT_TRUE(got);
  ASSERT_EQ(got->status, 200) << got->body;
  const json body = json::parse(got->body);
  EXPECT_EQ(body["query"], json::array({"item3", "item8"}));
  expectCorrect(body, *model_a_, {"item3", "item8"}, 6);
  auto posted = c->Post("/recommend", R"({"items": ["item3", "item8"], "k": 6})", "application/json");
  ASSERT_TRUE(posted);
  EXPECT_EQ(json::parse(posted->body)["items"], body["items"]);
}

TEST_F(ServerTest, BadRequestsGetTheirCodes) {
  options_.max_body_bytes = 4096;
  start();
  auto c = client(server_->port());
  const auto status = [&](httplib::Result res) { return res ? res->status : -1; };
  EXPECT_EQ(status(c->Get("/recommend")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&item=")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=2&k=3")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=0")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=-3")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=abc")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=1001")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=99999999999999999999")), 400);
  EXPECT_EQ(status(c->Get("/recommend?item=nosuchitem")), 404);
  EXPECT_EQ(status(c->Post("/recommend", "{not json", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", "[1,2]", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", R"({"items": []})", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", R"({"items": [1]})", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", R"({"items": ["item1"], "k": 2.5})", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", R"({"items": ["item1"], "k": "3"})", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", R"({"items": ["item1", "nope"]})", "application/json")), 404);
  // A misspelt name is not answered with the default it would silently give.
  EXPECT_EQ(status(c->Get("/recommend?item=item1&K=1")), 400);
  EXPECT_EQ(status(c->Post("/recommend", R"({"items": ["item1"], "kk": 4})", "application/json")), 400);
  httplib::Headers admin = {{"Authorization", "Bearer secret"}};
  EXPECT_EQ(status(c->Post("/admin/reload", admin, R"({"model": ""})", "application/json")), 400);
  EXPECT_EQ(status(c->Post("/recommend", std::string(10000, ' '), "application/json")), 413);
  EXPECT_EQ(status(c->Get("/nowhere")), 404);
  EXPECT_EQ(status(c->Post("/admin/reload", "", "application/json")), 401);
  httplib::Headers wrong = {{"Authorization", "Bearer nope"}};
  EXPECT_EQ(status(c->Post("/admin/reload", wrong, "", "application/json")), 401);
  auto res = c->Get("/recommend?item=nosuchitem");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body).at("error").get<std::string>(), "unknown item 'nosuchitem'");
  // A long unknown token is quoted cut short, not echoed whole.
  res = c->Get("/recommend?item=" + std::string(5000, 'x'));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(json::parse(res->body).at("error").get<std::string>(), "unknown item '" + std::string(120, 'x') + "...'");
  // Still serving after all that, and the errors are counted.
  EXPECT_EQ(status(c->Get("/recommend?item=item1&k=1000")), 200);
  EXPECT_EQ(status(c->Get("/healthz")), 200);
  // Statuses httplib answers itself (413, no route) and /healthz are counted by its logger, which runs just
  // after the response is sent: poll briefly.
  const std::vector<std::string> wanted = {
      "ringtrain_serve_requests_total{endpoint=\"recommend\",code=\"404\"} 4\n",
      "ringtrain_serve_requests_total{endpoint=\"recommend\",code=\"200\"} 1\n",
      "ringtrain_serve_requests_total{endpoint=\"healthz\",code=\"200\"} 1\n",
      "code=\"413\"",
      "ringtrain_serve_request_seconds_quantile{quantile=\"0.99\"}"};
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool all = false;
  while (!all && std::chrono::steady_clock::now() < deadline) {
    res = c->Get("/metrics");
    ASSERT_TRUE(res);
    all = true;
    for (const auto& w : wanted) all = all && res->body.find(w) != std::string::npos;
    if (!all) std::this_thread::sleep_for(10ms);
  }
  for (const auto& w : wanted) EXPECT_NE(res->body.find(w), std::string::npos) << w << " in\n" << res->body;
  EXPECT_EQ(res->body.find("code=\"-1\""), std::string::npos);
  EXPECT_NE(res->body.find("ringtrain_serve_model_version 1"), std::string::npos);
}

// What a request gives and would not be read is refused with its reason, not answered with defaults: URL
// parameters on a POST (its arguments are in its body), a JSON key given twice (the parser kept the last),
// two Authorization headers (which one counts would be a guess).
TEST_F(ServerTest, WhatARequestGivesIsReadOrRefused) {
  start();
  auto c = client(server_->port());
  const auto error = [](const httplib::Result& res) {
    return res ? std::to_string(res->status) + " " + json::parse(res->body).value("error", "") : "no answer";
  };
  EXPECT_EQ(error(c->Post("/recommend?k=2", R"({"items": ["item1"]})", "application/json")),
            "400 unexpected query parameter 'k': a POST takes 'items' and 'k' in its JSON body");
  EXPECT_EQ(error(c->Post("/recommend", R"({"items": ["item1"], "k": 2, "k": 3})", "application/json")),
            "400 key 'k' given twice in the request body");
  // An empty token is a client's slip in either form (POST used to answer 404 "unknown item ''").
  EXPECT_EQ(error(c->Post("/recommend", R"({"items": ["item1", ""]})", "application/json")),
            "400 'items' holds an empty string");
  EXPECT_EQ(error(c->Get("/recommend?item=")), "400 query parameter 'item' is empty");
  const httplib::Headers admin = {{"Authorization", "Bearer secret"}};
  EXPECT_EQ(error(c->Post("/admin/reload?model=" + path("b.vec"), admin, "", "application/json")),
            "400 unexpected query parameter 'model': a POST takes 'model' in its JSON body");
  EXPECT_EQ(error(c->Post("/admin/reload", admin, json{{"model", path("b.vec")}}.dump() + "x", "application/json")),
            "400 request body is not valid JSON");
  EXPECT_EQ(error(c->Post("/admin/reload", admin, R"({"model": "a", "model": "b"})", "application/json")),
            "400 key 'model' given twice in the request body");
  // The system would read the path to its NUL (b.vec), while the answer named the whole string.
  EXPECT_EQ(error(c->Post("/admin/reload", admin, json{{"model", path("b.vec") + std::string(1, '\0') + ".x"}}.dump(),
                          "application/json")),
            "400 'model' holds a NUL character");
  const httplib::Headers two = {{"Authorization", "Bearer secret"}, {"Authorization", "Bearer other"}};
  EXPECT_EQ(error(c->Post("/admin/reload", two, "", "application/json")), "400 'Authorization' given 2 times");
  EXPECT_EQ(server_->modelVersion(), 1u) << "a refused reload ran";
  // Keys of nested objects are their own: the same name in two objects is no repeat (then refused for
  // what it is).
  EXPECT_EQ(error(c->Post("/recommend", R"({"items": ["item1"], "k": {"a": 1, "b": {"a": 2}}})", "application/json")),
            "400 k must be an integer in 1..1000");
  auto ok = c->Post("/recommend", R"({"items": ["item1"], "k": 2})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

// HEAD goes wherever GET does (headers only, the same Content-Length); a method an endpoint does not take
// is 405 with the methods it does.
TEST_F(ServerTest, HeadIsAnsweredAsGetAndA405SaysWhatIsAllowed) {
  start();
  auto c = client(server_->port());
  for (const char* target : {"/healthz", "/metrics", "/recommend?item=item1&k=3"}) {
    auto get = c->Get(target);
    auto head = c->Head(target);
    ASSERT_TRUE(get && head) << target;
    EXPECT_EQ(head->status, 200) << target;
    EXPECT_TRUE(head->body.empty()) << target;
    if (std::string(target) != "/metrics") {  // the metrics change between the two requests
      EXPECT_EQ(head->get_header_value("Content-Length"), std::to_string(get->body.size())) << target;
    }
  }
  const std::vector<std::pair<std::string, std::string>> allowed = {
      {"/recommend", "GET, HEAD, POST"}, {"/healthz", "GET, HEAD"}, {"/metrics", "GET, HEAD"}, {"/admin/reload", "POST"}};
  for (const auto& [path, methods] : allowed) {
    auto res = c->Delete(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 405) << path;
    EXPECT_EQ(res->get_header_value("Allow"), methods) << path;
  }
  auto res = c->Get("/admin/reload");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  EXPECT_EQ(res->get_header_value("Allow"), "POST");
  res = c->Delete("/nowhere");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_FALSE(res->has_header("Allow"));
}

// A name in items.tsv that is not UTF-8 (JSON cannot carry it) is served with U+FFFD in place of the bad
// bytes: the item still answers, and so does every query whose answer includes it.
TEST_F(ServerTest, ANameThatIsNotUtf8IsServedWithAReplacementCharacter) {
  fs::create_directories(path("latin1"));
  testing::writeExport(path("latin1/m.vec"), 5, kDim, 9);
  std::string items = "id\tkey\tname\tcategory\n0\titem0\tCaf\xe9 \"Noir\"\tcat0\n";
  for (int i = 1; i < 5; ++i) items += std::to_string(i) + "\titem" + std::to_string(i) + "\tName\tcat\n";
  testing::writeText(path("latin1/items.tsv"), items);
  options_.cache_entries = 0;
  start(path("latin1/m.vec"));
  auto c = client(server_->port());
  auto res = c->Get("/recommend?item=item1&k=4");  // every other item, item0 included
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  bool seen = false;
  for (const auto& hit : body.at("items")) {
    if (hit.at("item") == "item0") {
      EXPECT_EQ(hit.at("name").get<std::string>(), "Caf\xef\xbf\xbd \"Noir\"");
      seen = true;
    }
  }
  EXPECT_TRUE(seen) << res->body;
  EXPECT_EQ(body.at("query"), json::array({"item1"}));
}

TEST_F(ServerTest, AdminDisabledWithoutToken) {
  options_.admin_token = "";
  start();
  auto res = client(server_->port())->Post("/admin/reload", {{"Authorization", "Bearer "}}, "", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
}

TEST_F(ServerTest, SwapUnderLoadLosesNoRequestAndAnswersMatchTheirVersion) {
  options_.max_batch = 8;
  options_.cache_entries = 0;  // every answer is scored, on the model the request started with
  start();
  std::atomic<bool> done{false};
  std::atomic<int> failures{0}, answered{0};
  std::mutex mu;
  std::vector<std::pair<int, json>> answers;  // (version, body) guarded by mu
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto c = client(server_->port());
      std::mt19937 rng(100 + t);
      const auto deadline = std::chrono::steady_clock::now() + 60s;
      while (!done.load() && std::chrono::steady_clock::now() < deadline) {
        const std::string item = "item" + std::to_string(rng() % kItems);
        auto res = c->Get(("/recommend?item=" + item + "&k=5").c_str());
        if (!res || res->status != 200) {
          failures++;
          continue;
        }
        answered++;
        json body = json::parse(res->body);
        std::lock_guard<std::mutex> lock(mu);
        if (answers.size() < 3000) answers.emplace_back(body["model_version"].get<int>(), std::move(body));
      }
    });
  }
  // Versions 2..7 alternate between b and a; reload through the HTTP admin endpoint and the API.
  auto admin = client(server_->port());
  for (int v = 2; v <= 7; ++v) {
    std::this_thread::sleep_for(50ms);
    const std::string file = v % 2 == 0 ? path("b.vec") : path("a.vec");
    if (v % 3 == 0) {
      EXPECT_EQ(server_->reload(file), static_cast<uint64_t>(v));
    } else {
      auto res = admin->Post("/admin/reload", {{"Authorization", "Bearer secret"}}, json{{"model", file}}.dump(),
                             "application/json");
      ASSERT_TRUE(res);
      ASSERT_EQ(res->status, 200) << res->body;
      EXPECT_EQ(json::parse(res->body)["model_version"].get<int>(), v);
    }
  }
  std::this_thread::sleep_for(100ms);
  done = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(answered.load(), 0);
  std::set<int> seen;
  for (const auto& [version, body] : answers) {
    ASSERT_GE(version, 1);
    ASSERT_LE(version, 7);
    seen.insert(version);
    // Odd versions are model a, even ones b: an answer scored on the other model would fail here.
    expectCorrect(body, version % 2 == 1 ? *model_a_ : *model_b_, {body["query"][0].get<std::string>()}, 5);
  }
  EXPECT_GE(seen.size(), 2u);
  EXPECT_EQ(server_->modelVersion(), 7u);
}

TEST_F(ServerTest, CacheNeverServesAnOldVersion) {
  options_.cache_entries = 1000;
  start();
  auto c = client(server_->port());
  auto first = c->Get("/recommend?item=item42&k=4");
  auto again = c->Get("/recommend?item=item42&k=4");
  ASSERT_TRUE(first && again);
  EXPECT_EQ(first->body, again->body);
  auto metrics = c->Get("/metrics");
  EXPECT_NE(metrics->body.find("ringtrain_serve_cache_hits_total 1"), std::string::npos);
  ASSERT_EQ(server_->reload(path("b.vec")), 2u);
  auto after = c->Get("/recommend?item=item42&k=4");
  ASSERT_TRUE(after);
  const json body = json::parse(after->body);
  EXPECT_EQ(body["model_version"].get<int>(), 2);
  expectCorrect(body, *model_b_, {"item42"}, 4);
}

// An export's token may hold any byte but whitespace, a record separator too: the cache must still tell the
// basket {a, b} from the one item "a<RS>b".
TEST_F(ServerTest, ATokenHoldingASeparatorIsNotTakenForABasket) {
  options_.cache_entries = 1000;
  testing::writeText(path("rs.vec"), "5 2\na 1 0\nb 0 1\na\x1e" "b -1 0\nc 0.7 0.7\nd -0.7 -0.7\n");
  start(path("rs.vec"));
  auto c = client(server_->port());
  auto basket = c->Get("/recommend?item=a&item=b&k=2");
  auto single = c->Get("/recommend?item=a%1Eb&k=2");
  ASSERT_TRUE(basket && single);
  ASSERT_EQ(single->status, 200) << single->body;
  const json body = json::parse(single->body);
  EXPECT_EQ(body.at("query"), json::array({"a\x1e" "b"})) << single->body;
  ASSERT_EQ(body.at("items").size(), 2u) << single->body;
  EXPECT_EQ(body.at("items")[0].at("item"), "d") << single->body;  // (-1, 0) is closest to (-0.7, -0.7)
}

TEST_F(ServerTest, BrokenModelIsRefusedAndTheOldOneKeepsServing) {
  start();
  testing::writeText(path("broken.vec"), "3 2\nx 1 2\ny 1\nz 1 2\n");
  auto c = client(server_->port());
  auto res = c->Post("/admin/reload", {{"Authorization", "Bearer secret"}}, json{{"model", path("broken.vec")}}.dump(),
                     "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 422);
  EXPECT_NE(json::parse(res->body)["error"].get<std::string>().find(path("broken.vec") + ":3:"), std::string::npos)
      << res->body;
  EXPECT_THROW(server_->reload(path("missing.vec")), DataError);
  // A misspelt key is refused, not taken for "reload the current model".
  res = c->Post("/admin/reload", {{"Authorization", "Bearer secret"}}, json{{"modle", path("b.vec")}}.dump(),
                "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"].get<std::string>(), "unknown key 'modle' (the body may hold 'model')");
  EXPECT_EQ(server_->modelVersion(), 1u);
  res = c->Get("/recommend?item=item1&k=2");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["model_version"].get<int>(), 1);
  res = c->Get("/metrics");
  EXPECT_NE(res->body.find("ringtrain_serve_reloads_total{result=\"refused\"} 2"), std::string::npos) << res->body;
  // The model loaded at start is not a reload.
  EXPECT_NE(res->body.find("ringtrain_serve_reloads_total{result=\"ok\"} 0"), std::string::npos) << res->body;
  // The next good model gets the next version.
  EXPECT_EQ(server_->reload(path("b.vec")), 2u);
  res = c->Get("/metrics");
  EXPECT_NE(res->body.find("ringtrain_serve_reloads_total{result=\"ok\"} 1"), std::string::npos) << res->body;
  // A reload never opens a FIFO (it would wait for a writer, holding every reload after it and a stopping
  // server): refused at once.
  ASSERT_EQ(::mkfifo(path("pipe.vec").c_str(), 0600), 0);
  res = c->Post("/admin/reload", {{"Authorization", "Bearer secret"}}, json{{"model", path("pipe.vec")}}.dump(),
                "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 422);
  EXPECT_THAT(json::parse(res->body)["error"].get<std::string>(), ::testing::HasSubstr("is not a regular file"));
  EXPECT_EQ(server_->reload(path("a.vec")), 3u);
}

// Bytes that are not UTF-8 reach answers through error messages (a broken file quoted) and tokens; the JSON
// writer used to throw on them: a 500 for a request, and an abort for a reload's refusal.
TEST_F(ServerTest, BytesThatAreNotUtf8AreAnsweredNotThrown) {
  start();
  testing::writeText(path("binary.vec"), std::string("\xff\xfe\x00\x81 garbage\n\xc3\x28\n", 16));
  auto c = client(server_->port());
  auto res = c->Post("/admin/reload", {{"Authorization", "Bearer secret"}}, json{{"model", path("binary.vec")}}.dump(),
                     "application/json");
  ASSERT_TRUE(res) << "the server must survive refusing the model";
  EXPECT_EQ(res->status, 422) << res->body;
  EXPECT_NE(json::parse(res->body)["error"].get<std::string>().find(path("binary.vec")), std::string::npos) << res->body;
  res = c->Get("/recommend?item=%ff%fe&k=2");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404) << res->body;
  EXPECT_EQ(json::parse(res->body)["error"].get<std::string>(), "unknown item '\xEF\xBF\xBD\xEF\xBF\xBD'");
  res = c->Get("/recommend?item=item1&k=2");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(server_->modelVersion(), 1u);
}

// A query whose vector is zero ranks nothing above anything: refused, not answered with the first k rows.
TEST_F(ServerTest, AQueryWithoutDirectionIsRefused) {
  testing::writeText(path("zero.vec"), "6 2\nz 0 0\nu 1 0\nv -1 0\nw 0.6 0.8\nn -1 0.0000001\nx -1 0.1\n");
  start(path("zero.vec"));
  auto c = client(server_->port());
  auto res = c->Get("/recommend?item=z&k=2");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 422) << res->body;
  EXPECT_THAT(json::parse(res->body)["error"].get<std::string>(), ::testing::HasSubstr("no direction"));
  res = c->Post("/recommend", json{{"items", {"u", "v"}}, {"k", 1}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 422) << res->body;
  // Nearly cancelling: what is left of the sum is rounding, not a direction.
  res = c->Post("/recommend", json{{"items", {"u", "n"}}, {"k", 1}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 422) << res->body;
  // Short but real: u + x points up, to w.
  res = c->Post("/recommend", json{{"items", {"u", "x"}}, {"k", 1}}.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["items"][0]["item"].get<std::string>(), "w");
  res = c->Get("/recommend?item=u&k=1");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["items"][0]["item"].get<std::string>(), "w");
}

TEST_F(ServerTest, NewExportInWatchDirIsSwappedIn) {
  fs::create_directories(path("watch"));
  fs::copy_file(path("a.vec"), path("watch/model-1.vec"));
  options_.watch_dir = path("watch");
  options_.watch_interval_ms = 20;
  start(path("watch/model-1.vec"));
  EXPECT_EQ(server_->modelVersion(), 1u);
  // A broken export is refused; then a good one (written aside and renamed in) is taken.
  testing::writeText(path("watch/.model-2.tmp"), "2 2\na 1 2\n");
  fs::rename(path("watch/.model-2.tmp"), path("watch/model-2.vec"));
  auto c = client(server_->port());
  const auto refused_deadline = std::chrono::steady_clock::now() + 20s;
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() < refused_deadline) {
    auto res = c->Get("/metrics");
    refused = res && res->body.find("ringtrain_serve_reloads_total{result=\"refused\"} 1") != std::string::npos;
    if (!refused) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(server_->modelVersion(), 1u);
  fs::copy_file(path("b.vec"), path("watch/.model-3.tmp"));
  fs::last_write_time(path("watch/.model-3.tmp"), fs::file_time_type::clock::now() + 1s);
  fs::rename(path("watch/.model-3.tmp"), path("watch/model-3.vec"));
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (server_->modelVersion() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server_->modelVersion(), 2u);
  auto res = c->Get("/recommend?item=item9&k=3");
  ASSERT_TRUE(res);
  expectCorrect(json::parse(res->body), *model_b_, {"item9"}, 3);
  // An export that arrives with an older modification time (cp -p, rsync -t, tar) is new all the same.
  fs::copy_file(path("a.vec"), path("watch/.model-4.tmp"));
  fs::last_write_time(path("watch/.model-4.tmp"), fs::file_time_type::clock::now() - std::chrono::hours(24 * 365));
  fs::rename(path("watch/.model-4.tmp"), path("watch/model-4.vec"));
  const auto deadline4 = std::chrono::steady_clock::now() + 20s;
  while (server_->modelVersion() < 3 && std::chrono::steady_clock::now() < deadline4) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server_->modelVersion(), 3u);
  res = c->Get("/recommend?item=item9&k=3");
  ASSERT_TRUE(res);
  expectCorrect(json::parse(res->body), *model_a_, {"item9"}, 3);
  // A reload without a path reads the serving file again, not model-3, the newest by time.
  EXPECT_EQ(server_->reload(), 4u);
  // Removing the export that serves loads nothing else either.
  fs::remove(path("watch/model-4.vec"));
  std::this_thread::sleep_for(400ms);  // 20 intervals
  EXPECT_EQ(server_->modelVersion(), 4u);
  res = c->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["model"].get<std::string>(), path("watch/model-4.vec"));
}

// Exports that arrive together are tried newest first until one loads, as at start: a broken newest one
// used to hide a good one that came with it (the watcher tried only the newest).
TEST_F(ServerTest, OfExportsArrivingTogetherTheNewestThatLoadsIsTaken) {
  fs::create_directories(path("watch"));
  options_.watch_dir = path("watch");
  options_.watch_interval_ms = 100;
  start(path("a.vec"));
  fs::copy_file(path("b.vec"), path("watch/.good.tmp"));
  fs::last_write_time(path("watch/.good.tmp"), fs::file_time_type::clock::now() - 10s);
  testing::writeText(path("watch/.broken.tmp"), "2 2\na 1 2\n");
  fs::rename(path("watch/.good.tmp"), path("watch/good.vec"));
  fs::rename(path("watch/.broken.tmp"), path("watch/broken.vec"));
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (server_->modelVersion() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server_->modelVersion(), 2u);
  auto res = client(server_->port())->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["model"].get<std::string>(), path("watch/good.vec"));
  res = client(server_->port())->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("ringtrain_serve_reloads_total{result=\"refused\"} 1"), std::string::npos) << res->body;
}

// An export that arrives while the first model loads (seconds, for a large one) is new to the watcher: the
// directory is listed before that load, not after it. Here the first model comes through a pipe, and the
// export is put in place once the server has opened the pipe, before the pipe delivers the model.
TEST_F(ServerTest, AnExportArrivingDuringTheFirstLoadIsTaken) {
  fs::create_directories(path("watch"));
  options_.watch_dir = path("watch");
  options_.watch_interval_ms = 20;
  ASSERT_EQ(::mkfifo(path("first.vec").c_str(), 0600), 0) << std::strerror(errno);
  std::thread writer([&] {
    // Opening without blocking fails (ENXIO) until the server has opened the pipe to read it.
    int fd = -1;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while ((fd = ::open(path("first.vec").c_str(), O_WRONLY | O_NONBLOCK)) < 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    fs::copy_file(path("b.vec"), path("watch/.late.tmp"));
    fs::rename(path("watch/.late.tmp"), path("watch/late.vec"));
    if (fd < 0) return;  // the server never read the pipe: the test fails below
    ::fcntl(fd, F_SETFL, 0);  // blocking writes from here
    std::ifstream in(path("a.vec"), std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t done = 0; done < text.size();) {
      const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  });
  start(path("first.vec"));
  writer.join();
  EXPECT_EQ(server_->modelVersion(), 1u);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (server_->modelVersion() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server_->modelVersion(), 2u);
  auto res = client(server_->port())->Get("/recommend?item=item9&k=3");
  ASSERT_TRUE(res);
  expectCorrect(json::parse(res->body), *model_b_, {"item9"}, 3);
}

TEST_F(ServerTest, FullQueueAnswers429) {
  options_.max_batch = 1;
  options_.score_threads = 1;
  options_.queue_capacity = 1;
  options_.cache_entries = 0;
  testing::writeExport(path("big.vec"), 60000, 64, 3);
  start(path("big.vec"));
  std::atomic<int> ok{0}, busy{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 24; ++t) {
    threads.emplace_back([&, t] {
      auto c = client(server_->port());
      for (int i = 0; i < 6; ++i) {
        auto res = c->Get(("/recommend?item=item" + std::to_string(t * 10 + i) + "&k=3").c_str());
        if (res && res->status == 200) ok++;
        else if (res && res->status == 429) busy++;
        else other++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(busy.load(), 0);  // 24 clients against one queued slot and one scorer
  auto res = client(server_->port())->Get("/metrics");
  EXPECT_NE(res->body.find("ringtrain_serve_queue_rejections_total " + std::to_string(busy.load())), std::string::npos);
}

// At start, a broken newest export (a bad deploy) is passed over for the next newest that loads, and with
// none, for --model: a restart used to fail on it, --model or not.
TEST_F(ServerTest, ABrokenNewestExportAtStartIsPassedOver) {
  fs::create_directories(path("watch"));
  fs::copy_file(path("a.vec"), path("watch/older.vec"));
  fs::last_write_time(path("watch/older.vec"), fs::file_time_type::clock::now() - std::chrono::hours(1));
  testing::writeText(path("watch/newest.vec"), "3 3\na 1 0 0\n");
  options_.watch_dir = path("watch");
  options_.watch_interval_ms = 20;
  const auto answerOf = [&] {
    auto res = client(server_->port())->Get("/recommend?item=item7&k=5");
    EXPECT_TRUE(res && res->status == 200);
    return res ? json::parse(res->body) : json();
  };
  start(path("b.vec"));
  EXPECT_EQ(server_->modelVersion(), 1u);
  expectCorrect(answerOf(), *model_a_, {"item7"}, 5);  // the older export, not --model
  server_.reset();
  fs::remove(path("watch/older.vec"));
  start(path("b.vec"));
  expectCorrect(answerOf(), *model_b_, {"item7"}, 5);  // no export loads: --model
  server_.reset();
  options_.watch_dir.clear();
  EXPECT_THROW(Server(options_, path("watch/newest.vec"), ""), DataError);  // nothing else to take: refused
}

// A watched path that is a file would never show an export: refused at start, not left silent. One that
// does not exist yet is accepted (a trainer's output directory to come).
TEST_F(ServerTest, AWatchDirThatIsAFileIsRefused) {
  config::ServeOptions watching = options_;
  watching.watch_dir = path("a.vec");
  EXPECT_THAT([&] { Server s(watching, path("a.vec"), ""); },
              ::testing::ThrowsMessage<ConfigError>(::testing::HasSubstr("serve.watch_dir " + path("a.vec") +
                                                                         ": not a directory")));
  watching.watch_dir = path("not-yet");
  Server later(watching, path("a.vec"), "");
  EXPECT_EQ(later.modelVersion(), 1u);
}

TEST_F(ServerTest, PortInUseIsRefused) {
  start();
  config::ServeOptions same = options_;
  same.port = server_->port();
  Server second(same, path("a.vec"), "");
  EXPECT_THROW(second.start(), ConfigError);
  // The first server still answers.
  auto res = client(server_->port())->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// A burst of connections opened at once must all complete their handshake promptly. With httplib's
// compiled-in backlog of 5 the kernel dropped most of them and they waited for TCP retransmits (1 s and
// more): seconds of latency that the server's own histogram never saw.
TEST_F(ServerTest, BurstOfConnectionsIsQueuedNotDropped) {
  start();
  constexpr int kBurst = 200;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<pollfd> fds;
  for (int i = 0; i < kBurst; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
    fds.push_back({fd, POLLOUT, 0});
  }
  // Well under the first SYN retransmit (1 s): a dropped handshake cannot complete in this window.
  const auto deadline = std::chrono::steady_clock::now() + 600ms;
  int connected = 0;
  std::vector<bool> done(kBurst, false);
  while (connected < kBurst && std::chrono::steady_clock::now() < deadline) {
    ::poll(fds.data(), fds.size(), 50);
    for (int i = 0; i < kBurst; ++i) {
      if (done[i] || (fds[i].revents & (POLLOUT | POLLERR | POLLHUP)) == 0) continue;
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
      EXPECT_EQ(err, 0) << "connection " << i << ": " << std::strerror(err);
      done[i] = true;
      fds[i].events = 0;
      ++connected;
    }
  }
  for (const pollfd& p : fds) ::close(p.fd);
  EXPECT_EQ(connected, kBurst) << "handshakes still pending after 600 ms: dropped by a full accept queue";
  auto res = client(server_->port())->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(ServeCommandTest, BrokenModelExitsWithFileAndLine) {
  const std::string dir = ringtrain::testing::makeTempDir("serve_cmd");
  testing::writeText(dir + "/m.vec", "2 2\na 1 2\nb 1 two\n");
  const auto r = ringtrain::testing::runCommand(
      {ringtrain::testing::binPath("ringtrain"), "serve", "--model", dir + "/m.vec", "--port", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(dir + "/m.vec:3:"), std::string::npos) << r.err;
  // At start-up nothing was serving: no "version 0 keeps serving", and the error is said once.
  EXPECT_EQ(r.err.find("keeps serving"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  fs::remove_all(dir);
}

// An empty address would resolve to the wildcard: the server on every interface, where the default keeps it
// on this machine. Refused from either place, before the model loads.
TEST(ServeCommandTest, AnEmptyHostIsRefusedNotTakenForEveryInterface) {
  const std::string dir = ringtrain::testing::makeTempDir("serve_host");
  testing::writeText(dir + "/m.vec", "2 2\na 1 2\nb 1 3\n");
  for (const std::vector<std::string>& how : {std::vector<std::string>{"--set", "serve.host="},
                                              std::vector<std::string>{"--host", ""}}) {
    std::vector<std::string> argv = {ringtrain::testing::binPath("ringtrain"), "serve", "--model", dir + "/m.vec",
                                     "--port", "0"};
    argv.insert(argv.end(), how.begin(), how.end());
    const auto r = ringtrain::testing::runCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << how[0] << ": " << r.err;
    EXPECT_NE(r.err.find("0.0.0.0 for every interface"), std::string::npos) << how[0] << ": " << r.err;
  }
  fs::remove_all(dir);
}

TEST(ServeCommandTest, ServesAndStopsCleanlyOnSigterm) {
  const std::string dir = ringtrain::testing::makeTempDir("serve_cmd");
  testing::writeExport(dir + "/m.vec", 50, 4, 5);
  // The shell waits (bounded) for the "listening" line, asks once, then sends SIGTERM and reports the exit.
  const std::string script =
      "\"$0\" serve --model \"$1\" --port 0 > \"$2/out\" 2> \"$2/err\" & pid=$!\n"
      "for i in $(seq 300); do grep -q listening \"$2/out\" && break; sleep 0.05; done\n"
      "port=$(sed -n 's/.*127.0.0.1:\\([0-9]*\\).*/\\1/p' \"$2/out\")\n"
      "echo port=$port\n"
      "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3; exec 3<&-\n"
      "kill -TERM $pid; wait $pid; echo exit=$?\n";
  const auto r = ringtrain::testing::runCommand(
      {"bash", "-c", script, ringtrain::testing::binPath("ringtrain"), dir + "/m.vec", dir}, {std::chrono::seconds(60)});
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_NE(r.out.find("exit=0"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("port=\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"status\":\"ok\""), std::string::npos) << r.out;
  fs::remove_all(dir);
}

// A port in use is refused before the model loads: here the model is a FIFO nobody writes, which a load
// would wait on until the test's deadline.
TEST(ServeCommandTest, APortInUseIsRefusedBeforeTheModelLoads) {
  const std::string dir = ringtrain::testing::makeTempDir("serve_busy");
  ASSERT_EQ(::mkfifo((dir + "/model.fifo").c_str(), 0600), 0);
  HttpServerOptions busy_options;
  busy_options.port = 0;
  HttpServer busy(busy_options, [](const HttpRequest&, HttpReply reply) { reply({}); },
                  [](int status, const std::string&, const std::string&) { return HttpResponse{status, "text/plain", ""}; },
                  nullptr);
  busy.start();
  ringtrain::testing::CommandOptions options;
  options.timeout = std::chrono::seconds(30);
  const auto r = ringtrain::testing::runCommand({ringtrain::testing::binPath("ringtrain"), "serve", "--model",
                                                 dir + "/model.fifo", "--port", std::to_string(busy.port())},
                                                options);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(busy.port())), std::string::npos) << r.err;
  busy.stop();
  // A host that is not this machine's, with port 0 (a free one): also before the model (the FIFO, which
  // nobody writes, would hold the load until the deadline).
  const auto not_local = ringtrain::testing::runCommand({ringtrain::testing::binPath("ringtrain"), "serve", "--model",
                                                         dir + "/model.fifo", "--port", "0", "--host", "192.0.2.1"},
                                                        options);
  EXPECT_FALSE(not_local.timed_out) << "the host was checked only after the model loaded";
  EXPECT_EQ(not_local.exit_code, 2) << not_local.err;
  EXPECT_NE(not_local.err.find("cannot listen on 192.0.2.1:0"), std::string::npos) << not_local.err;
  fs::remove_all(dir);
}

// Loading the first model may block (here on a FIFO nobody writes) or take long: SIGTERM still stops it.
TEST(ServeCommandTest, SigtermWhileLoadingTheFirstModelStopsIt) {
  const std::string dir = ringtrain::testing::makeTempDir("serve_cmd");
  const std::string script =
      "mkfifo \"$1/model.fifo\" || exit 9\n"
      "\"$0\" serve --model \"$1/model.fifo\" --port 0 2> \"$1/err\" & pid=$!\n"
      // SIGTERM only once ringtrain (not yet the shell's child before its exec, whose mask is the shell's)
      // blocks it: before that, on a slow machine, it would simply die of it.
      "for i in $(seq 600); do\n"
      "  if [ \"$(cat /proc/$pid/comm 2>/dev/null)\" = ringtrain ]; then\n"
      "    b=$(awk '/^SigBlk/ {print $2}' /proc/$pid/status 2>/dev/null)\n"
      "    [ -n \"$b\" ] && [ $(( 0x$b & 0x4000 )) -ne 0 ] && break\n"
      "  fi\n"
      "  sleep 0.05\n"
      "done\n"
      "sleep 0.2; kill -TERM $pid; wait $pid; echo exit=$?\n";
  const auto r = ringtrain::testing::runCommand({"bash", "-c", script, ringtrain::testing::binPath("ringtrain"), dir},
                                                {std::chrono::seconds(30)});
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  EXPECT_NE(r.out.find("exit=0"), std::string::npos) << r.out;
  std::ifstream err(dir + "/err");
  const std::string said((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("signal 15 while loading the model"), std::string::npos) << said;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ringtrain::serve
