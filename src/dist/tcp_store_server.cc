// The store server: one thread, one poll() loop over the listening socket, a wake-up eventfd and every
// connection. All state (the table, the connections, parked requests) belongs to that thread, so nothing
// here takes a lock. A get/wait whose keys are missing is parked on its connection; every write re-checks
// the parked requests, and the poll timeout is the nearest deadline, so no client ever holds up another.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <optional>
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

constexpr size_t kMaxConnections = 4096;
constexpr size_t kReadChunk = 256 * 1024;
// A connection that has not presented its token by then is dropped, so idle strangers cannot pile up.
constexpr std::chrono::seconds kHelloDeadline{10};
// How long the listener rests after accept() ran out of descriptors or memory.
constexpr std::chrono::milliseconds kAcceptPause{100};

// Constant-time comparison, so the token cannot be guessed byte by byte from reply timings.
bool sameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

struct Parked {
  bool is_get = false;
  std::vector<std::string> keys;
  Clock::time_point deadline;
};

struct Connection {
  UniqueFd fd;
  std::string peer;
  bool authenticated = false;
  Clock::time_point hello_deadline;
  std::vector<uint8_t> in;
  std::vector<uint8_t> out;
  size_t out_offset = 0;
  std::optional<Parked> parked;
  bool close_after_flush = false;  // refused: send the reason, then close
  bool dead = false;
};

}  // namespace

class TcpStoreServer::Impl {
 public:
  Impl(std::string bind_addr, int port, std::string token, const std::string& port_advice)
      : address_(std::move(bind_addr)), token_(std::move(token)) {
    listen_ = net::listenTcp(address_, port, &port_, port_advice);
    wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    RT_CHECK_T(CommError, wake_.valid(), "store: eventfd failed: ", std::strerror(errno));
    thread_ = std::thread([this] { run(); });
  }
  ~Impl() { stop(); }

  void stop() {
    std::call_once(stop_once_, [this] {
      stopping_.store(true);
      const uint64_t one = 1;
      (void)!::write(wake_.get(), &one, sizeof one);
      if (thread_.joinable()) thread_.join();
    });
  }

  int port() const { return port_; }
  const std::string& address() const { return address_; }
  std::string refusals() const {
    std::lock_guard<std::mutex> lock(refusals_mu_);
    if (refused_ == 0) return "";
    return detail::concat(refused_, " connection(s) refused, the last from ", last_refused_);
  }

 private:
  void run() {
    std::vector<pollfd> fds;
    while (!stopping_.load()) {
      fds.clear();
      fds.push_back({wake_.get(), POLLIN, 0});
      // Out of descriptors, a pending connection stays in the backlog and the listener stays readable: it
      // rests until accept_again_ instead of spinning on it.
      const bool accepting = conns_.size() < kMaxConnections && Clock::now() >= accept_again_;
      fds.push_back({listen_.get(), static_cast<short>(accepting ? POLLIN : 0), 0});
      Clock::time_point next = Clock::now() + std::chrono::hours(1);
      if (!accepting && conns_.size() < kMaxConnections) next = accept_again_;
      for (Connection& c : conns_) {
        short events = POLLRDHUP;
        // A parked connection is not read further (its client waits for this reply), but a hang-up is seen.
        if (!c.parked && !c.close_after_flush) events |= POLLIN;
        if (c.out_offset < c.out.size()) events |= POLLOUT;
        fds.push_back({c.fd.get(), events, 0});
        if (c.parked) next = std::min(next, c.parked->deadline);
        if (!c.authenticated) next = std::min(next, c.hello_deadline);
      }
      const int rc = ::poll(fds.data(), fds.size(), net::pollTimeoutMs(next));
      if (rc < 0 && errno != EINTR) {
        error("store server: poll failed: {}", std::strerror(errno));
        break;
      }
      if (stopping_.load()) break;
      if (rc > 0) {
        if (fds[1].revents & POLLIN) acceptAll();
        size_t i = 2;
        for (Connection& c : conns_) {
          if (i >= fds.size()) break;  // accepted in this round: polled next time
          const short revents = fds[i++].revents;
          if (revents & POLLOUT) flush(c);
          if (!c.dead && (revents & POLLIN)) readFrom(c);
          if (!c.dead && (revents & (POLLERR | POLLHUP | POLLRDHUP)) && !(revents & POLLIN)) c.dead = true;
          if (!c.dead && c.parked && (revents & (POLLERR | POLLHUP | POLLRDHUP))) c.dead = true;
        }
      }
      expireDeadlines();
      conns_.remove_if([](const Connection& c) { return c.dead; });
    }
    conns_.clear();  // closes every connection: clients blocked in get/wait see the store go away
    listen_.reset();
  }

  void acceptAll() {
    while (conns_.size() < kMaxConnections) {
      const int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
          accept_again_ = Clock::now() + kAcceptPause;
          if (Clock::now() >= next_accept_warning_) {  // at most one a minute: the job may go on meanwhile
            warn("store server: accept failed: {} (retrying every {} ms; raise ulimit -n?)", std::strerror(err),
                 kAcceptPause.count());
            next_accept_warning_ = Clock::now() + std::chrono::minutes(1);
          }
        } else if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR && err != ECONNABORTED) {
          warn("store server: accept failed: {}", std::strerror(err));
        }
        return;
      }
      Connection c;
      c.fd = UniqueFd(fd);
      c.peer = net::peerName(fd);
      c.hello_deadline = Clock::now() + kHelloDeadline;
      conns_.push_back(std::move(c));
    }
  }

  void readFrom(Connection& c) {
    const size_t old = c.in.size();
    c.in.resize(old + kReadChunk);
    const ssize_t n = ::recv(c.fd.get(), c.in.data() + old, kReadChunk, 0);
    if (n <= 0) {
      c.in.resize(old);
      if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) c.dead = true;
      return;
    }
    c.in.resize(old + static_cast<size_t>(n));
    processFrames(c);
  }

  void processFrames(Connection& c) {
    size_t pos = 0;
    while (!c.dead && !c.parked && !c.close_after_flush && c.in.size() - pos >= 4) {
      uint32_t len;
      std::memcpy(&len, c.in.data() + pos, 4);
      const uint32_t limit = c.authenticated ? kMaxStoreMessageBytes : kMaxStoreHelloBytes;
      if (len > limit) {
        warn("store server: closing the connection from {}: a message of {} bytes exceeds the limit of {}",
             c.peer, len, limit);
        c.dead = true;
        break;
      }
      if (c.in.size() - pos - 4 < len) break;
      try {
        handle(c, c.in.data() + pos + 4, len);
      } catch (const wire::WireError& e) {
        warn("store server: closing the connection from {}: malformed message ({})", c.peer, e.what());
        c.dead = true;
      }
      pos += 4 + len;
    }
    c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(std::min(pos, c.in.size())));
  }

  void reply(Connection& c, std::vector<uint8_t> frame) {
    if (c.out_offset == c.out.size()) {
      c.out = std::move(frame);
      c.out_offset = 0;
    } else {
      c.out.insert(c.out.end(), frame.begin(), frame.end());
    }
    flush(c);
  }

  void flush(Connection& c) {
    while (c.out_offset < c.out.size()) {
      const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_offset, c.out.size() - c.out_offset, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_offset += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      c.dead = true;
      return;
    }
    c.out.clear();
    c.out_offset = 0;
    if (c.close_after_flush) c.dead = true;
  }

  static std::vector<uint8_t> statusOnly(Status s) { return wire::Writer().u8(static_cast<uint8_t>(s)).frame(); }

  bool hasAll(const std::vector<std::string>& keys) const {
    return std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return table_.count(k) != 0; });
  }

  void handle(Connection& c, const uint8_t* data, uint32_t len) {
    wire::Reader r(data, len);
    const auto op = static_cast<Op>(r.u8());
    if (!c.authenticated) {
      if (op != Op::kHello) {
        refuse(c, "the first request must present the job token");
        return;
      }
      const std::string token = r.str();
      r.expectDone();
      if (!sameToken(token, token_)) {
        refuse(c, token.empty() ? "missing job token" : "wrong job token",
               token.empty() ? " (set RINGTRAIN_JOB_TOKEN)" : "");
        return;
      }
      c.authenticated = true;
      reply(c, statusOnly(Status::kOk));
      return;
    }
    bool wrote = false;
    switch (op) {
      case Op::kSet: {
        std::string key = r.str();
        auto value = r.vec();
        r.expectDone();
        table_[std::move(key)] = std::move(value);
        wrote = true;
        reply(c, statusOnly(Status::kOk));
        break;
      }
      case Op::kGet:
      case Op::kWait: {
        Parked p;
        p.is_get = op == Op::kGet;
        if (p.is_get) {
          p.keys.push_back(r.str());
        } else {
          p.keys = r.strs();
        }
        const uint64_t timeout_ms = std::min<uint64_t>(r.u64(), uint64_t{1} << 40);
        r.expectDone();
        p.deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
        if (hasAll(p.keys)) {
          answerParked(c, p);
        } else {
          c.parked = std::move(p);
        }
        break;
      }
      case Op::kAdd: {
        const std::string key = r.str();
        const int64_t delta = r.i64();
        r.expectDone();
        int64_t value = 0;
        auto it = table_.find(key);
        if (it != table_.end()) {
          const auto* b = reinterpret_cast<const char*>(it->second.data());
          auto [ptr, ec] = std::from_chars(b, b + it->second.size(), value);
          if (ec != std::errc() || ptr != b + it->second.size()) {
            reply(c, wire::Writer()
                         .u8(static_cast<uint8_t>(Status::kError))
                         .str("store key '" + key + "' does not hold an integer")
                         .frame());
            break;
          }
        }
        value += delta;
        const std::string text = std::to_string(value);
        table_[key] = Bytes(text.begin(), text.end());
        wrote = true;
        reply(c, wire::Writer().u8(static_cast<uint8_t>(Status::kOk)).i64(value).frame());
        break;
      }
      case Op::kCompareSet: {
        const std::string key = r.str();
        auto expected = r.vec();
        auto desired = r.vec();
        r.expectDone();
        auto it = table_.find(key);
        const bool matches = it == table_.end() ? expected.empty() : it->second == expected;
        if (matches) {
          table_[key] = std::move(desired);
          wrote = true;
        }
        it = table_.find(key);
        reply(c, wire::Writer()
                     .u8(static_cast<uint8_t>(Status::kOk))
                     .vec(it == table_.end() ? Bytes{} : it->second)
                     .frame());
        break;
      }
      case Op::kCheck: {
        const auto keys = r.strs();
        r.expectDone();
        reply(c, wire::Writer().u8(static_cast<uint8_t>(Status::kOk)).u8(hasAll(keys) ? 1 : 0).frame());
        break;
      }
      case Op::kDelete: {
        const std::string key = r.str();
        r.expectDone();
        const bool erased = table_.erase(key) > 0;
        reply(c, wire::Writer().u8(static_cast<uint8_t>(Status::kOk)).u8(erased ? 1 : 0).frame());
        break;
      }
      default:
        throw wire::WireError("unknown operation " + std::to_string(static_cast<int>(op)));
    }
    if (wrote) wakeParked();
  }

  // Refuses a connection that did not authenticate: said in the log, counted for refusals(), and told to the
  // client (with `advice` after the reason).
  void refuse(Connection& c, const std::string& reason, const std::string& advice = "") {
    warn("store server: refused {}: {}", c.peer, reason);
    {
      std::lock_guard<std::mutex> lock(refusals_mu_);
      ++refused_;
      last_refused_ = c.peer + ": " + reason;
    }
    reply(c, wire::Writer().u8(static_cast<uint8_t>(Status::kError)).str(reason + advice).frame());
    c.close_after_flush = true;
    if (c.out.empty()) c.dead = true;
  }

  void answerParked(Connection& c, const Parked& p) {
    if (p.is_get) {
      reply(c, wire::Writer().u8(static_cast<uint8_t>(Status::kOk)).vec(table_.at(p.keys[0])).frame());
    } else {
      reply(c, statusOnly(Status::kOk));
    }
  }

  void wakeParked() {
    for (Connection& c : conns_) {
      if (c.dead || !c.parked || !hasAll(c.parked->keys)) continue;
      const Parked p = std::move(*c.parked);
      c.parked.reset();
      answerParked(c, p);
      processFrames(c);  // requests that arrived while it was parked
    }
  }

  void expireDeadlines() {
    const auto now = Clock::now();
    for (Connection& c : conns_) {
      if (c.dead) continue;
      if (!c.authenticated && now >= c.hello_deadline) {
        warn("store server: closing the connection from {}: no job token within {} s", c.peer,
             kHelloDeadline.count());
        c.dead = true;
      } else if (c.parked && now >= c.parked->deadline) {
        c.parked.reset();
        reply(c, statusOnly(Status::kTimeout));
        processFrames(c);
      }
    }
  }

  const std::string address_;
  const std::string token_;
  int port_ = 0;
  UniqueFd listen_;
  UniqueFd wake_;
  std::atomic<bool> stopping_{false};
  std::once_flag stop_once_;
  std::thread thread_;
  // Owned by the server thread only:
  Clock::time_point accept_again_{};         // the listener rests until then (accept ran out of descriptors)
  Clock::time_point next_accept_warning_{};  // such failures are said at most once a minute
  std::list<Connection> conns_;
  std::map<std::string, Bytes> table_;

  // Connections refused (refuse()), for refusals(): read by other threads.
  mutable std::mutex refusals_mu_;
  int64_t refused_ = 0;        // guarded by refusals_mu_
  std::string last_refused_;   // guarded by refusals_mu_
};

TcpStoreServer::TcpStoreServer(std::string bind_addr, int port, std::string token, const std::string& port_advice) {
  RT_CHECK_T(ConfigError, port >= 0 && port <= 65535, "store port ", port, " is not a port (0-65535)");
  impl_ = std::make_unique<Impl>(std::move(bind_addr), port, std::move(token), port_advice);
}
TcpStoreServer::~TcpStoreServer() = default;
int TcpStoreServer::port() const { return impl_->port(); }
const std::string& TcpStoreServer::address() const { return impl_->address(); }
std::string TcpStoreServer::refusals() const { return impl_->refusals(); }
void TcpStoreServer::stop() { impl_->stop(); }

}  // namespace ringtrain::dist
