// The rendezvous store over TCP: one TcpStoreServer per job (hosted by `ringrun` on node 0, or by rank 0
// itself when the job was started some other way, see connect_store.h) and a TcpStoreClient in every
// process that needs it.
//
// Security: the server binds only to the address it is given (127.0.0.1 for a single node) and serves
// only clients that first present the job token (RINGTRAIN_JOB_TOKEN, read by the caller and passed in).
// A client with a wrong or missing token is refused, logged and disconnected.
//
// Wire protocol (all integers little-endian): every message is a frame `u32 length | payload`, length at
// most kMaxStoreMessageBytes (kMaxStoreHelloBytes before the token was accepted). A request payload is
// `u8 op | fields`, a reply payload `u8 status | fields`; strings and byte values are `u32 length | bytes`.
// The first request on a connection must be Hello(token). A malformed, truncated-then-closed or oversized
// message closes that one connection; the server never blocks on one client: it is a single poll() loop,
// and a get/wait whose keys are missing is parked until a write makes it ready or its deadline passes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ringtrain/dist/store.h"

namespace ringtrain::dist {

inline constexpr uint32_t kMaxStoreMessageBytes = 64u << 20;  // largest frame a client or server accepts
inline constexpr uint32_t kMaxStoreHelloBytes = 4096;         // largest frame before the token is accepted
inline constexpr std::chrono::milliseconds kDefaultStoreOpTimeout{60000};

// Serves one job's store from its own thread until stop() or destruction.
// Thread-safe: port(), address() and stop() may be called from any thread.
class TcpStoreServer {
 public:
  // `bind_addr` is a numeric IPv4/IPv6 address or a host name that resolves to a local address; `port` 0
  // picks a free port (see port()). Throws CommError when the address cannot be bound; when the port is in
  // use, the message says to choose another with `port_advice` (the way the program's user sets it).
  TcpStoreServer(std::string bind_addr, int port, std::string token,
                 const std::string& port_advice = "MASTER_PORT or comm.master_port");
  ~TcpStoreServer();  // stop()
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const;
  const std::string& address() const;
  // "" when no connection was refused; else how many were, over the store's life, and why the last one was
  // ("3 connection(s) refused, the last from 10.0.0.2:40112: wrong job token"), for a wait that then times
  // out (compare with what it said when the wait began).
  std::string refusals() const;
  // Closes every connection (clients blocked in get/wait get a CommError) and joins the server thread.
  // Idempotent.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// A Store reached over TCP. Safe to call from many threads: each concurrent call uses its own connection
// (connections are pooled and reused), so one thread blocked in wait() does not hold up another.
// Errors: TimeoutError (a blocking call's keys did not appear in time, naming them), CommError (unreachable,
// token refused, connection lost, or the server did not answer within op_timeout: a stopped or hung store
// is not a key still missing).
class TcpStoreClient final : public Store {
 public:
  // Connects (retrying until `connect_timeout`, so clients may start before the server) and presents
  // `token`; throws CommError when the server stays unreachable or refuses the token. `op_timeout` bounds
  // every non-blocking call (set, add, ...) and the extra time allowed for a blocking call's reply.
  TcpStoreClient(std::string host, int port, std::string token, std::chrono::milliseconds connect_timeout,
                 std::chrono::milliseconds op_timeout = kDefaultStoreOpTimeout);
  ~TcpStoreClient() override;
  TcpStoreClient(const TcpStoreClient&) = delete;
  TcpStoreClient& operator=(const TcpStoreClient&) = delete;

  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  Bytes compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  bool deleteKey(const std::string& key) override;

  const std::string& host() const { return host_; }
  int port() const { return port_; }

 private:
  class Connection;
  // Sends one request and returns the reply payload (status byte stripped); `reply_timeout` is how long
  // to wait for the answer. Throws as documented above.
  std::vector<uint8_t> call(const std::vector<uint8_t>& request, std::chrono::milliseconds reply_timeout,
                            const std::string& what);
  std::unique_ptr<Connection> takeConnection();
  void giveBack(std::unique_ptr<Connection> connection);

  const std::string host_;
  const int port_;
  const std::string token_;
  const std::chrono::milliseconds connect_timeout_;
  const std::chrono::milliseconds op_timeout_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
  std::atomic<bool> connected_once_{false};         // any thread may connect
};

}  // namespace ringtrain::dist
