// The TCP store: every operation, several clients as threads, timeouts that name their keys, and a server
// that survives wrong tokens, garbage, oversized and truncated messages, and stops with clients blocked.
#include "ringtrain/dist/tcp_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <future>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "ringtrain/dist/connect_store.h"
#include "testing/captured_log.h"

namespace ringtrain::dist {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr char kToken[] = "s3cret-token";

std::unique_ptr<TcpStoreClient> client(const TcpStoreServer& server, const std::string& token = kToken) {
  return std::make_unique<TcpStoreClient>("127.0.0.1", server.port(), token, 5000ms, 5000ms);
}

// A raw TCP connection for sending bytes the client library never would.
class RawSocket {
 public:
  explicit RawSocket(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  }
  ~RawSocket() { ::close(fd_); }
  void send(const std::string& bytes) { (void)!::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL); }
  void sendFrame(const std::string& payload) {
    const uint32_t n = static_cast<uint32_t>(payload.size());
    send(std::string(reinterpret_cast<const char*>(&n), 4) + payload);
  }
  // True when the server closed the connection within the deadline (reading and dropping any reply).
  bool closedByServer(std::chrono::milliseconds deadline = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    char buf[4096];
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
};

std::string helloPayload(const std::string& token) {
  const uint32_t n = static_cast<uint32_t>(token.size());
  return std::string("\x01", 1) + std::string(reinterpret_cast<const char*>(&n), 4) + token;
}

void expectStillServing(const TcpStoreServer& server) {
  auto c = client(server);
  c->set("alive", toBytes("yes"));
  EXPECT_EQ(toString(c->get("alive", 1000ms)), "yes");
}

TEST(TcpStore, EveryOperation) {
  TcpStoreServer server("127.0.0.1", 0, kToken);
  ASSERT_GT(server.port(), 0);
  auto c = client(server);
  c->set("a", toBytes("1"));
  EXPECT_EQ(toString(c->get("a", 1000ms)), "1");
  c->set("a", toBytes("two"));
  EXPECT_EQ(toString(c->get("a", 1000ms)), "two");
  c->set("empty", {});
  EXPECT_TRUE(c->get("empty", 1000ms).empty());

  EXPECT_EQ(c->add("n", 5), 5);
  EXPECT_EQ(c->add("n", -7), -2);
  EXPECT_EQ(toString(c->get("n", 1000ms)), "-2");
  EXPECT_THROW(c->add("a", 1), CommError);  // "two" is not an integer

  EXPECT_EQ(toString(c->compareSet("cas", {}, toBytes("x"))), "x");  // absent matches empty
  EXPECT_EQ(toString(c->compareSet("cas", toBytes("nope"), toBytes("y"))), "x");
  EXPECT_EQ(toString(c->compareSet("cas", toBytes("x"), toBytes("y"))), "y");

  EXPECT_TRUE(c->check({"a", "n", "cas"}));
  EXPECT_FALSE(c->check({"a", "absent"}));
  c->wait({"a", "n"}, 1000ms);
  EXPECT_TRUE(c->deleteKey("a"));
  EXPECT_FALSE(c->deleteKey("a"));
  EXPECT_FALSE(c->check({"a"}));

  const Bytes big(3 << 20, 0xab);  // several MB go through in one message
  c->set("big", big);
  EXPECT_EQ(c->get("big", 5000ms), big);
}

TEST(TcpStore, SeveralClientsAsThreadsMeet) {
  TcpStoreServer server("127.0.0.1", 0, kToken);
  constexpr int kRanks = 4;
  std::vector<std::future<std::string>> results;
  for (int rank = 0; rank < kRanks; ++rank) {
    results.push_back(std::async(std::launch::async, [&server, rank] {
      auto c = client(server);
      c->add("joined", 1);
      c->set("addr/" + std::to_string(rank), toBytes("host" + std::to_string(rank)));
      std::vector<std::string> keys;
      for (int r = 0; r < kRanks; ++r) keys.push_back("addr/" + std::to_string(r));
      c->wait(keys, 10000ms);
      std::string all;
      for (const auto& k : keys) all += toString(c->get(k, 1000ms)) + ",";
      return all;
    }));
  }
  for (auto& r : results) EXPECT_EQ(r.get(), "host0,host1,host2,host3,");
  EXPECT_EQ(client(server)->add("joined", 0), kRanks);
}

TEST(TcpStore, BlockedGetDoesNotHoldUpOtherClientsOrThreads) {
  TcpStoreServer server("127.0.0.1", 0, kToken);
  auto shared = client(server);
  auto waiter = std::async(std::launch::async, [&] { return toString(shared->get("late", 20000ms)); });
  // Another thread on the same client object and another client both get through meanwhile.
  for (int i = 0; i < 20; ++i) shared->add("count", 1);
  auto other = client(server);
  EXPECT_EQ(other->add("count", 1), 21);
  other->set("late", toBytes("here"));
  EXPECT_EQ(waiter.get(), "here");
}

TEST(TcpStore, GetOfMissingKeyTimesOutNamingTheKey) {
  TcpStoreServer server("127.0.0.1", 0, kToken);
  auto c = client(server);
  try {
    c->get("never/set", 200ms);
    FAIL() << "expected a TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("never/set"));
  }
  c->set("one", toBytes("1"));
  try {
    c->wait({"one", "two"}, 200ms);
    FAIL() << "expected a TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'two'"));
    EXPECT_THAT(e.what(), ::testing::Not(HasSubstr("'one'")));
  }
  expectStillServing(server);  // the connection that timed out is reusable
  EXPECT_EQ(toString(c->get("one", 100ms)), "1");
}

TEST(TcpStore, WrongOrMissingTokenIsRefusedAndTheStoreKeepsServing) {
  TcpStoreServer server("127.0.0.1", 0, kToken);
  try {
    client(server, "guess");
    FAIL() << "a wrong token was accepted";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("wrong job token"));
  }
  try {
    client(server, "");
    FAIL() << "a missing token was accepted";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing job token"));
  }
  // A request without the token first is refused too.
  RawSocket raw(server.port());
  const uint32_t key_len = 1;
  raw.sendFrame(std::string("\x02", 1) + std::string(reinterpret_cast<const char*>(&key_len), 4) + "k" +
                std::string(4, '\0'));
  EXPECT_TRUE(raw.closedByServer());
  expectStillServing(server);
}

TEST(TcpStore, GarbageOversizedAndTruncatedMessagesCloseOnlyThatConnection) {
  TcpStoreServer server("127.0.0.1", 0, kToken);
  auto good = client(server);
  good->set("k", toBytes("v"));
  {
    RawSocket raw(server.port());
    raw.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");  // read as a huge length before the token
    EXPECT_TRUE(raw.closedByServer());
  }
  {
    RawSocket raw(server.port());
    raw.sendFrame(helloPayload(kToken));
    raw.send(std::string("\xff\xff\xff\xff", 4));  // oversized length after the token
    EXPECT_TRUE(raw.closedByServer());
  }
  {
    RawSocket raw(server.port());
    raw.sendFrame(helloPayload(kToken));
    const uint32_t bogus_key_len = 1000;  // a field longer than its message
    raw.sendFrame(std::string("\x02", 1) + std::string(reinterpret_cast<const char*>(&bogus_key_len), 4) + "k");
    EXPECT_TRUE(raw.closedByServer());
  }
  {
    RawSocket raw(server.port());
    raw.sendFrame(helloPayload(kToken));
    raw.sendFrame(std::string("\x7f", 1));  // unknown operation
    EXPECT_TRUE(raw.closedByServer());
  }
  {
    RawSocket raw(server.port());
    raw.sendFrame(helloPayload(kToken));
    raw.send(std::string("\x40\x00\x00\x00\x02", 5));  // truncated, then the client goes away
  }
  {
    RawSocket stalled(server.port());  // a truncated message whose sender stays: must not stall the server
    stalled.send(std::string("\x10\x00", 2));
    expectStillServing(server);
    EXPECT_EQ(toString(good->get("k", 1000ms)), "v");
  }
  expectStillServing(server);
}

TEST(TcpStore, StopsCleanlyWithClientsBlockedInWait) {
  auto server = std::make_unique<TcpStoreServer>("127.0.0.1", 0, kToken);
  std::vector<std::future<std::string>> waiters;
  std::vector<std::unique_ptr<TcpStoreClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(client(*server));
    waiters.push_back(std::async(std::launch::async, [c = clients.back().get()] {
      try {
        c->wait({"never"}, 60000ms);
        return std::string("returned");
      } catch (const TimeoutError&) {
        return std::string("timeout");
      } catch (const CommError& e) {
        return std::string("comm: ") + e.what();
      }
    }));
  }
  // Most likely parked by now; either way stop() must join and every waiter must see the store go away
  // (a CommError, not a 60 s timeout).
  std::this_thread::sleep_for(50ms);
  server->stop();
  server.reset();
  for (auto& w : waiters) EXPECT_THAT(w.get(), HasSubstr("comm: "));
}

// A CommError that says so, not a TimeoutError: a get or wait would report one as keys still missing.
TEST(TcpStore, UnreachableStoreIsACommErrorAfterTheConnectTimeout) {
  int port = 0;
  {
    TcpStoreServer probe("127.0.0.1", 0, kToken);
    port = probe.port();
  }
  try {
    TcpStoreClient("127.0.0.1", port, kToken, 300ms);
    ADD_FAILURE() << "reached a store that is gone";
  } catch (const TimeoutError& e) {
    ADD_FAILURE() << "a TimeoutError: " << e.what();
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot reach the store at 127.0.0.1:" + std::to_string(port) + " within 300 ms"));
  }
}

// A rank given another port than rank 0's (a launcher's environment not passed on) says so after a few
// seconds, once, not only when the whole wait ends; a short wait (ringrun's rendezvous tries every 250 ms
// with a new client) says nothing.
TEST(TcpStore, AStoreStillUnreachableAfterAFewSecondsIsSaidOnce) {
  int port = 0;
  {
    TcpStoreServer probe("127.0.0.1", 0, kToken);
    port = probe.port();
  }
  testing::CapturedLog logged;
  EXPECT_THROW(TcpStoreClient("127.0.0.1", port, kToken, 300ms), CommError);
  const std::string short_wait = logged.text();
  EXPECT_THROW(TcpStoreClient("127.0.0.1", port, kToken, 6500ms), CommError);
  EXPECT_EQ(short_wait.find("not reached"), std::string::npos) << short_wait;
  const std::string text = logged.text();
  const std::string said = "store: the store at 127.0.0.1:" + std::to_string(port) + " not reached after 5 s";
  const size_t first = text.find(said);
  ASSERT_NE(first, std::string::npos) << text;
  EXPECT_THAT(text, HasSubstr("MASTER_ADDR, MASTER_PORT"));
  EXPECT_EQ(text.find("not reached", first + said.size()), std::string::npos) << "said more than once: " << text;
}

// A socket listening on 127.0.0.1 at a free port (set in *port) that nobody serves: -1 on failure.
int listenOnLoopback(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

// A store name that does not resolve is waited for (a cluster's DNS entry may come late), but said once at
// the first try, not only in the error at the end of the timeout.
TEST(TcpStore, AnUnresolvableNameIsSaidAtOnceAndTriedUntilTheTimeout) {
  std::string text;
  {
    testing::CapturedLog logged;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      TcpStoreClient("no-such-host.invalid", 29500, kToken, 600ms);
      ADD_FAILURE() << "reached a store on a name that does not exist";
    } catch (const CommError& e) {
      EXPECT_THAT(e.what(), HasSubstr("cannot resolve 'no-such-host.invalid'"));
    }
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 600ms) << "gave up before the timeout";
    text = logged.text();
  }
  const size_t first = text.find("cannot resolve 'no-such-host.invalid'");
  ASSERT_NE(first, std::string::npos) << text;
  EXPECT_THAT(text, HasSubstr("trying again until the wait for the store ends"));
  EXPECT_EQ(text.find("cannot resolve", first + 1), std::string::npos) << "said more than once: " << text;
  // A new client for the same name (ringrun's rendezvous makes one every 250 ms) does not say it again.
  testing::CapturedLog again;
  EXPECT_THROW(TcpStoreClient("no-such-host.invalid", 29500, kToken, 300ms), CommError);
  EXPECT_EQ(again.text().find("cannot resolve"), std::string::npos) << again.text();
}

// A peer that accepts and never answers the token (a stopped rank 0, another program on the port) is given
// up on within the connect timeout (at least a second for the answer), not after the 30 s operation timeout.
TEST(TcpStore, APeerThatAcceptsButNeverAnswersIsGivenUpOnWithinTheConnectTimeout) {
  int port = 0;
  const int listener = listenOnLoopback(&port);  // the kernel completes connections; nobody accepts or answers
  ASSERT_GE(listener, 0);
  const auto start = std::chrono::steady_clock::now();
  try {
    TcpStoreClient("127.0.0.1", port, kToken, 1500ms, 30000ms);
    ADD_FAILURE() << "a silent peer was taken for a store";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no answer to the job token"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  ::close(listener);
}

// A store that took the token and then stopped answering (its host stopped mid-job): a call under a
// StoreCallCap gives up at the cap, not after the 30 s operation timeout.
TEST(TcpStore, ACallCapEndsCallsToAStoreThatStoppedAnswering) {
  int port = 0;
  const int listener = listenOnLoopback(&port);
  ASSERT_GE(listener, 0);
  std::promise<int> accepted;
  std::thread server([&] {  // answers the hello with "ok" (u32 length 1, status 0), then nothing more
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    uint8_t buf[4096];
    (void)::recv(fd, buf, sizeof buf, 0);
    const uint8_t ok[5] = {1, 0, 0, 0, 0};
    (void)::send(fd, ok, sizeof ok, MSG_NOSIGNAL);
    accepted.set_value(fd);
  });
  TcpStoreClient client("127.0.0.1", port, kToken, 5000ms, 30000ms);
  const int server_side = accepted.get_future().get();
  server.join();
  const auto start = std::chrono::steady_clock::now();
  try {
    StoreCallCap outer(10s);
    StoreCallCap cap(300ms);  // the earlier end holds
    client.set("k", toBytes("v"));
    ADD_FAILURE() << "a silent store answered";
  } catch (const TimeoutError& e) {
    ADD_FAILURE() << "a silent store is a CommError, not a missing key: " << e.what();
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), ::testing::ContainsRegex("did not answer set of key 'k' within [0-9]+ ms"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(StoreCallCap::end(), std::chrono::steady_clock::time_point::max()) << "a cap outlived its scope";
  ::close(server_side);
  ::close(listener);
}

// A port another job holds: the error says what to change.
TEST(TcpStore, APortInUseIsNamedWithWhatToChange) {
  TcpStoreServer first("127.0.0.1", 0, kToken);
  try {
    TcpStoreServer second("127.0.0.1", first.port(), kToken);
    ADD_FAILURE() << "two stores listened on one port";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Address already in use (another job, or one not yet gone, holds the port: "
                                    "choose another with MASTER_PORT or comm.master_port)"));
  }
}

TEST(TcpStore, ClientsMayStartBeforeTheServer) {
  int port = 0;
  {
    TcpStoreServer probe("127.0.0.1", 0, kToken);
    port = probe.port();
  }
  auto early = std::async(std::launch::async, [port] {
    TcpStoreClient c("127.0.0.1", port, kToken, 10000ms);
    return toString(c.get("hello", 10000ms));
  });
  std::this_thread::sleep_for(100ms);
  TcpStoreServer server("127.0.0.1", port, kToken);
  client(server)->set("hello", toBytes("world"));
  EXPECT_EQ(early.get(), "world");
}

TEST(ConnectStore, RankZeroOutsideRingrunHostsTheStoreAndKeysAreScopedByRestart) {
  ProcessInfo info;
  info.launcher = "mpirun";
  info.world_size = 2;   // a job of one keeps its store in memory
  info.master_port = 0;  // any free port (tests only; a real job names one)
  info.job_token = kToken;
  info.restart_count = 2;
  // With port 0 only this process knows the port; a second rank could not join, so just check the scoping.
  auto store = connectStore(info, 2000ms);
  store->set("x", toBytes("1"));
  EXPECT_EQ(toString(store->get("x", 1000ms)), "1");
  EXPECT_TRUE(store->check({"x"}));
}

// A job of one takes no port, whoever started it (alone, mpirun -np 1, RANK=0 WORLD_SIZE=1, ...): it works
// even when MASTER_PORT is taken by someone else, such as another job of one.
TEST(ConnectStore, AJobOfOneTakesNoPort) {
  TcpStoreServer busy("127.0.0.1", 0, kToken);  // holds a port, as a running job's store would
  for (const char* launcher : {"single", "env", "mpirun", "slurm", "torchrun"}) {
    ProcessInfo info;
    info.launcher = launcher;
    info.world_size = 1;
    info.master_port = busy.port();
    std::unique_ptr<Store> store;
    ASSERT_NO_THROW(store = connectStore(info, 2000ms)) << launcher;
    store->set("x", toBytes("1"));
    EXPECT_EQ(toString(store->get("x", 1000ms)), "1") << launcher;
    EXPECT_EQ(store->add("n", 2), 2) << launcher;
  }
}

// Out of descriptors, a connection waiting in the backlog keeps the listener readable: the server used to
// spin on it, warning each time. It now rests between tries, says so once, and serves again when
// descriptors are free.
TEST(TcpStore, AnAcceptOutOfDescriptorsRestsInsteadOfSpinning) {
#if defined(__SANITIZE_ADDRESS__)
  // UBSan's vptr check makes a pipe to probe memory; out of descriptors it reports every virtual call.
  GTEST_SKIP() << "needs file descriptors to be the only thing that runs out (scripts/sanitize.sh address)";
#endif
  testing::CapturedLog logged;  // before the server's thread starts, and gone after it ends
  TcpStoreServer server("127.0.0.1", 0, kToken);
  std::vector<int> filler;
  for (int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC); fd >= 0; fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
    filler.push_back(fd);
  }
  ASSERT_EQ(errno, EMFILE);
  ASSERT_FALSE(filler.empty());
  ::close(filler.back());  // one descriptor for the client's socket; none left for the server's accept
  filler.pop_back();
  {
    RawSocket waiting(server.port());
    std::this_thread::sleep_for(500ms);  // the server tries to accept it: EMFILE, again and again
    for (int fd : filler) ::close(fd);
    filler.clear();
  }
  const std::string text = logged.text();
  size_t warnings = 0;
  for (size_t at = text.find("accept failed"); at != std::string::npos; at = text.find("accept failed", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << text.substr(0, 2000);
  EXPECT_THAT(text, HasSubstr("retrying every 100 ms"));
  // Descriptors are back: the store serves again.
  auto c = client(server);
  c->set("after", toBytes("yes"));
  EXPECT_EQ(toString(c->get("after", 5000ms)), "yes");
}

}  // namespace
}  // namespace ringtrain::dist
