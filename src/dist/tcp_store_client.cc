#include <algorithm>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>

#include "dist/tcp_socket.h"
#include "dist/tcp_store_protocol.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/tcp_store.h"

namespace ringtrain::dist {

namespace {

using net::Clock;
using wire::Op;
using wire::Status;

std::string joinKeys(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "'" : ", '") + k + "'";
  return out;
}

thread_local Clock::time_point t_call_cap_end = Clock::time_point::max();

// Ranks reach the store within a second or two of each other's start. A rank still trying after this long
// is most often given another address or port than rank 0 (a launcher's environment not passed to it): said
// then, not only when the whole wait (comm.timeout_s, 300 s by default) ends.
constexpr auto kSayStillTryingAfter = std::chrono::seconds(5);

bool firstTimeUnresolved(const std::string& host) {
  static std::mutex mu;
  static auto* said = new std::set<std::string>();  // never destroyed: clients may outlive static destruction
  std::lock_guard<std::mutex> lock(mu);
  return said->insert(host).second;
}

}  // namespace

StoreCallCap::StoreCallCap(std::chrono::milliseconds budget) : previous_(t_call_cap_end) {
  t_call_cap_end = std::min(previous_, Clock::now() + budget);
}

StoreCallCap::~StoreCallCap() { t_call_cap_end = previous_; }

Clock::time_point StoreCallCap::end() { return t_call_cap_end; }

// One authenticated connection; used by one call at a time.
class TcpStoreClient::Connection {
 public:
  explicit Connection(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

TcpStoreClient::TcpStoreClient(std::string host, int port, std::string token, std::chrono::milliseconds connect_timeout,
                               std::chrono::milliseconds op_timeout)
    : host_(std::move(host)), port_(port), token_(std::move(token)), connect_timeout_(connect_timeout),
      op_timeout_(op_timeout) {
  RT_CHECK_T(ConfigError, port_ > 0 && port_ <= 65535, "store port ", port_, " is not a port (1-65535)");
  giveBack(takeConnection());  // fail now, not at the first call, when the store is unreachable
}

TcpStoreClient::~TcpStoreClient() = default;

std::unique_ptr<TcpStoreClient::Connection> TcpStoreClient::takeConnection() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  const std::string where = "the store at " + host_ + ":" + std::to_string(port_);
  const auto started = Clock::now();
  const auto deadline = std::min(started + connect_timeout_, StoreCallCap::end());
  std::string error;
  auto backoff = std::chrono::milliseconds(5);
  bool said_still_trying = false;
  // The server may not be up yet (ranks start together): retry refused connections until the deadline.
  for (;;) {
    UniqueFd fd = net::tryConnectTcp(host_, port_, deadline, &error);
    // Only for a client's first connection: later ones (after the store went away mid-job) are not about
    // addresses.
    if (!fd.valid() && !said_still_trying && !connected_once_ && Clock::now() - started >= kSayStillTryingAfter) {
      said_still_trying = true;
      warn("store: {} not reached after {} s ({}); still trying for up to {} s more. Every rank must be given "
           "rank 0's address and port (MASTER_ADDR, MASTER_PORT or comm.master_addr / master_port)",
           where, kSayStillTryingAfter.count(), error,
           std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now()).count());
    }
    if (!fd.valid() && error.rfind("cannot resolve", 0) == 0 && firstTimeUnresolved(host_)) {
      // A name may appear late (a cluster's DNS entry for a pod still starting): waited for, but said at once,
      // so that a typo is not a silent wait of the whole timeout. Once per name and process: a caller that
      // tries again with a new client (ringrun's rendezvous) does not repeat it.
      warn("store: {}; trying again until the wait for the store ends", error);
    }
    if (fd.valid()) {
      // The answer to the token counts against the connect deadline: a peer that accepts and never answers
      // (a stopped rank 0, another program on the port) must not hold the caller for op_timeout_ instead.
      // At least a second, so that a store answering late in the window still gets to.
      const auto now = Clock::now();
      const auto reply_deadline =
          std::min({now + op_timeout_, std::max<Clock::time_point>(deadline, now + std::chrono::seconds(1)),
                    StoreCallCap::end()});  // the cap's end holds over the second
      const auto hello = wire::Writer().u8(static_cast<uint8_t>(Op::kHello)).str(token_).frame();
      uint32_t len = 0;
      std::vector<uint8_t> payload;
      bool answered = false;
      try {
        answered = net::sendAll(fd.get(), hello.data(), hello.size(), reply_deadline, where) &&
                   net::recvAll(fd.get(), &len, 4, reply_deadline, where) && len >= 1 && len <= kMaxStoreHelloBytes;
        if (answered) {
          payload.resize(len);
          answered = net::recvAll(fd.get(), payload.data(), len, reply_deadline, where);
        }
      } catch (const CommError& e) {
        error = e.what();
        answered = false;
        payload.clear();
      }
      if (answered && static_cast<Status>(payload[0]) == Status::kOk) {
        connected_once_ = true;
        return std::make_unique<Connection>(std::move(fd));
      }
      if (answered) {
        std::string reason = "refused";
        try {
          wire::Reader r(payload.data() + 1, payload.size() - 1);
          reason = r.str();
        } catch (const wire::WireError&) {
        }
        RT_THROW(CommError, where, " refused this client: ", reason);
      }
      if (error.empty()) error = "no answer to the job token";
    }
    if (Clock::now() >= deadline) {
      // A CommError (exit 3), not a TimeoutError: get() and wait() read theirs as keys still missing, and
      // ringrun's rendezvous would wait on for a store nobody can reach.
      RT_THROW(CommError, "cannot reach ", where, " within ",
               std::min<int64_t>(connect_timeout_.count(),
                                 std::chrono::duration_cast<std::chrono::milliseconds>(deadline - started).count()),
               " ms: ", error);
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - Clock::now()));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

void TcpStoreClient::giveBack(std::unique_ptr<Connection> connection) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(std::move(connection));
}

std::vector<uint8_t> TcpStoreClient::call(const std::vector<uint8_t>& frame, std::chrono::milliseconds reply_timeout,
                                          const std::string& what) {
  const std::string where = "the store at " + host_ + ":" + std::to_string(port_);
  auto conn = takeConnection();
  const auto start = Clock::now();
  const auto deadline = std::min(start + reply_timeout, StoreCallCap::end());
  reply_timeout = std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(deadline - start));
  uint32_t len = 0;
  // On any failure the connection is dropped (its stream position is unknown); the next call opens another.
  bool done = net::sendAll(conn->fd(), frame.data(), frame.size(), deadline, where) &&
              net::recvAll(conn->fd(), &len, 4, deadline, where);
  if (done && (len < 1 || len > kMaxStoreMessageBytes)) {
    RT_THROW(CommError, where, " sent a malformed reply (", len, " bytes) to ", what);
  }
  std::vector<uint8_t> payload(done ? len : 0);
  done = done && net::recvAll(conn->fd(), payload.data(), len, deadline, where);
  // A CommError, not a TimeoutError: get() and wait() read theirs as keys still missing, and a store that
  // stopped answering (its process stopped, its machine or network gone) would be waited on as if it had.
  if (!done) {
    RT_THROW(CommError, where, " did not answer ", what, " within ", reply_timeout.count(),
             " ms (its process stopped, or its host or the network is gone)");
  }
  giveBack(std::move(conn));
  const auto status = static_cast<Status>(payload[0]);
  if (status == Status::kTimeout) {
    RT_THROW(TimeoutError, "store ", what, " timed out");
  }
  if (status == Status::kError) {
    std::string reason = "error";
    try {
      wire::Reader r(payload.data() + 1, payload.size() - 1);
      reason = r.str();
    } catch (const wire::WireError&) {
    }
    RT_THROW(CommError, where, " failed ", what, ": ", reason);
  }
  payload.erase(payload.begin());
  return payload;
}

namespace {

wire::Writer op(Op o) {
  wire::Writer w;
  w.u8(static_cast<uint8_t>(o));
  return w;
}

template <typename F>
auto decode(const std::vector<uint8_t>& payload, F&& f) {
  try {
    wire::Reader r(payload.data(), payload.size());
    return f(r);
  } catch (const wire::WireError& e) {
    RT_THROW(CommError, "the store sent a malformed reply: ", e.what());
  }
}

uint64_t timeoutMs(std::chrono::milliseconds t) { return static_cast<uint64_t>(std::max<int64_t>(0, t.count())); }

}  // namespace

void TcpStoreClient::set(const std::string& key, const Bytes& value) {
  call(op(Op::kSet).str(key).vec(value).frame(), op_timeout_, "set of key '" + key + "'");
}

Bytes TcpStoreClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  std::vector<uint8_t> payload;
  try {
    payload = call(op(Op::kGet).str(key).u64(timeoutMs(timeout)).frame(), timeout + op_timeout_,
                   "get of key '" + key + "'");
  } catch (const TimeoutError&) {
    RT_THROW(TimeoutError, "store get timed out after ", timeout.count(), " ms; missing key: '", key, "' (store ",
             host_, ":", port_, ")");
  }
  return decode(payload, [](wire::Reader& r) { return r.vec(); });
}

int64_t TcpStoreClient::add(const std::string& key, int64_t delta) {
  auto payload = call(op(Op::kAdd).str(key).i64(delta).frame(), op_timeout_, "add to key '" + key + "'");
  return decode(payload, [](wire::Reader& r) { return r.i64(); });
}

Bytes TcpStoreClient::compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) {
  auto payload = call(op(Op::kCompareSet).str(key).vec(expected).vec(desired).frame(), op_timeout_,
                      "compare-and-set of key '" + key + "'");
  return decode(payload, [](wire::Reader& r) { return r.vec(); });
}

bool TcpStoreClient::check(const std::vector<std::string>& keys) {
  wire::Writer w = op(Op::kCheck);
  w.u32(static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) w.str(k);
  auto payload = call(w.frame(), op_timeout_, "check of keys " + joinKeys(keys));
  return decode(payload, [](wire::Reader& r) { return r.u8() != 0; });
}

void TcpStoreClient::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  wire::Writer w = op(Op::kWait);
  w.u32(static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) w.str(k);
  w.u64(timeoutMs(timeout));
  try {
    call(w.frame(), timeout + op_timeout_,
         "wait (" + std::to_string(timeout.count()) + " ms) for keys " + joinKeys(keys));
  } catch (const TimeoutError&) {
    // Name the keys that are still missing, not all of them.
    std::vector<std::string> missing;
    try {
      for (const auto& k : keys) {
        if (!check({k})) missing.push_back(k);
      }
    } catch (const CommError&) {
      missing = keys;
    }
    RT_THROW(TimeoutError, "store wait timed out after ", timeout.count(), " ms; missing keys: ",
             joinKeys(missing.empty() ? keys : missing), " (store ", host_, ":", port_, ")");
  }
}

bool TcpStoreClient::deleteKey(const std::string& key) {
  auto payload = call(op(Op::kDelete).str(key).frame(), op_timeout_, "delete of key '" + key + "'");
  return decode(payload, [](wire::Reader& r) { return r.u8() != 0; });
}

}  // namespace ringtrain::dist
