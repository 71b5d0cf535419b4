#include "dist/tcp_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

#include "ringtrain/core/error.h"

namespace ringtrain::dist::net {
namespace {

struct AddrInfoList {
  addrinfo* head = nullptr;
  ~AddrInfoList() {
    if (head != nullptr) ::freeaddrinfo(head);
  }
};

// Returns 0 or the getaddrinfo error code.
int resolve(const std::string& host, int port, bool passive, AddrInfoList& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  return ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &out.head);
}

// The address of an IPv4 or IPv6 socket address as text ("10.0.0.2", "fd00::2"); "" for another family.
std::string addressText(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = "";
  if (address->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text, sizeof text);
  } else if (address->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text, sizeof text);
  }
  return text;
}

void setNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

std::string loopbackBindAddress(const std::string& host) {
  AddrInfoList list;
  if (resolve(host, 0, true, list) != 0 || list.head == nullptr) return "";
  const addrinfo* first = list.head;
  const bool loopback =
      (first->ai_family == AF_INET &&
       (ntohl(reinterpret_cast<const sockaddr_in*>(first->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
      (first->ai_family == AF_INET6 &&
       IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(first->ai_addr)->sin6_addr));
  return loopback ? addressText(first->ai_addr) : "";
}

std::string routeSourceAddress(const std::string& host, int port) {
  AddrInfoList list;
  if (resolve(host, port, false, list) != 0) return "";
  for (const addrinfo* a = list.head; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    UniqueFd fd(::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid() || ::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) continue;
    sockaddr_storage mine{};
    socklen_t length = sizeof mine;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&mine), &length) != 0) continue;
    if (std::string source = addressText(reinterpret_cast<const sockaddr*>(&mine)); !source.empty()) return source;
  }
  return "";
}

std::string firstAddressOutsideLoopback() {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return "";
  std::string v4, v6;
  for (const ifaddrs* i = all; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const std::string text = addressText(i->ifa_addr);
    const bool loopback = text.rfind("127.", 0) == 0 || text == "::1";
    if (text.empty() || loopback || text.rfind("fe80:", 0) == 0) continue;  // link-local needs a scope
    std::string& slot = i->ifa_addr->sa_family == AF_INET ? v4 : v6;
    if (slot.empty()) slot = text;
  }
  ::freeifaddrs(all);
  return v4.empty() ? v6 : v4;
}

int pollTimeoutMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

UniqueFd listenTcp(const std::string& addr, int port, int* bound_port, const std::string& port_advice) {
  AddrInfoList list;
  if (int rc = resolve(addr, port, true, list); rc != 0) {
    RT_THROW(CommError, "store: cannot resolve bind address '", addr, "': ", ::gai_strerror(rc));
  }
  std::string last_error = "no address";
  bool in_use = false;
  for (addrinfo* ai = list.head; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), 1024) != 0) {
      in_use = in_use || errno == EADDRINUSE;
      last_error = std::strerror(errno);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    return fd;
  }
  RT_THROW(CommError, "store: cannot listen on ", addr, ":", port, ": ", last_error,
           in_use ? " (another job, or one not yet gone, holds the port: choose another with " + port_advice + ")"
                  : "");
}

UniqueFd tryConnectTcp(const std::string& host, int port, Clock::time_point deadline, std::string* error) {
  AddrInfoList list;
  if (int rc = resolve(host, port, false, list); rc != 0) {
    *error = std::string("cannot resolve '") + host + "': " + ::gai_strerror(rc);
    return UniqueFd();
  }
  for (addrinfo* ai = list.head; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      *error = std::strerror(errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        *error = std::strerror(errno);
        continue;
      }
      pollfd p{fd.get(), POLLOUT, 0};
      int rc;
      do {
        rc = ::poll(&p, 1, pollTimeoutMs(deadline));
      } while (rc < 0 && errno == EINTR);
      if (rc == 0) {
        *error = "connect timed out";
        continue;
      }
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (rc < 0 || so_error != 0) {
        *error = std::strerror(rc < 0 ? errno : so_error);
        continue;
      }
    }
    setNoDelay(fd.get());
    return fd;
  }
  return UniqueFd();
}

std::string peerName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  std::string host = addressText(reinterpret_cast<const sockaddr*>(&ss));
  int port = 0;
  if (ss.ss_family == AF_INET) port = ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) port = ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return (host.empty() ? "?" : host) + ":" + std::to_string(port);
}

bool sendAll(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& what) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t sent = ::send(fd, p, n, MSG_NOSIGNAL);
    if (sent > 0) {
      p += sent;
      n -= static_cast<size_t>(sent);
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd, POLLOUT, 0};
      const int rc = ::poll(&pfd, 1, pollTimeoutMs(deadline));
      if (rc == 0) return false;
      continue;
    }
    RT_THROW(CommError, "lost the connection to ", what, ": ", std::strerror(errno));
  }
  return true;
}

bool recvAll(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& what) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    const ssize_t got = ::recv(fd, p, n, 0);
    if (got > 0) {
      p += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) RT_THROW(CommError, "lost the connection to ", what, ": closed by the other side");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd pfd{fd, POLLIN, 0};
      const int rc = ::poll(&pfd, 1, pollTimeoutMs(deadline));
      if (rc == 0) return false;
      continue;
    }
    RT_THROW(CommError, "lost the connection to ", what, ": ", std::strerror(errno));
  }
  return true;
}

}  // namespace ringtrain::dist::net
