#include "comm/local_address.h"

#include <unistd.h>

#include <string>

#include "dist/tcp_socket.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {

bool isLoopbackName(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

std::string localAddressTowards(const std::string& master, int port) {
  if (isLoopbackName(master)) return "127.0.0.1";
  std::string address = dist::net::routeSourceAddress(master, port);
  if (address.empty() || isLoopbackName(address)) {
    const std::string outside = dist::net::firstAddressOutsideLoopback();
    if (!outside.empty()) address = outside;
  }
  if (!address.empty() && !isLoopbackName(address)) return address;
  char name[256] = {};
  RT_CHECK_T(CommError, ::gethostname(name, sizeof name - 1) == 0, "gethostname failed");
  warn("comm: no address outside loopback found towards {}: peers are given this host's name, {}", master, name);
  return name;
}

}  // namespace ringtrain::comm
