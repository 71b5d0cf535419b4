#include "comm/local_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "core/unique_fd.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {
namespace {

std::string textOf(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  const void* raw = address->sa_family == AF_INET
                        ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(address)->sin_addr)
                        : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr);
  return ::inet_ntop(address->sa_family, raw, text, sizeof text) != nullptr ? text : "";
}

// The local address a datagram to `master` would leave from, or "".
std::string routeSource(const std::string& master, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(master.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return "";
  std::string source;
  for (const addrinfo* a = found; a != nullptr && source.empty(); a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    UniqueFd fd(::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid() || ::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) continue;
    sockaddr_storage mine{};
    socklen_t length = sizeof mine;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&mine), &length) == 0) {
      source = textOf(reinterpret_cast<const sockaddr*>(&mine));
    }
  }
  ::freeaddrinfo(found);
  return source;
}

// This host's first IPv4 address outside loopback (else IPv6), or "".
std::string firstOutsideLoopback() {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return "";
  std::string v4, v6;
  for (const ifaddrs* i = all; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const std::string text = i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6
                                 ? textOf(i->ifa_addr)
                                 : "";
    if (text.empty() || isLoopbackName(text) || text.rfind("fe80:", 0) == 0) continue;  // link-local needs a scope
    std::string& slot = i->ifa_addr->sa_family == AF_INET ? v4 : v6;
    if (slot.empty()) slot = text;
  }
  ::freeifaddrs(all);
  return v4.empty() ? v6 : v4;
}

}  // namespace

bool isLoopbackName(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

std::string localAddressTowards(const std::string& master, int port) {
  if (isLoopbackName(master)) return "127.0.0.1";
  std::string address = routeSource(master, port);
  if (address.empty() || isLoopbackName(address)) {
    const std::string outside = firstOutsideLoopback();
    if (!outside.empty()) address = outside;
  }
  if (!address.empty() && !isLoopbackName(address)) return address;
  char name[256] = {};
  RT_CHECK_T(CommError, ::gethostname(name, sizeof name - 1) == 0, "gethostname failed");
  warn("comm: no address outside loopback found towards {}: peers are given this host's name, {}", master, name);
  return name;
}

}  // namespace ringtrain::comm
