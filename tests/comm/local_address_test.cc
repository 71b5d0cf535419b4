// The address a rank gives its peers: loopback for a job on one node, else one the peers can reach (never
// the 127.0.1.1 a host name may resolve to).
#include "comm/local_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <string>

#include <gtest/gtest.h>

namespace ringtrain::comm {
namespace {

// This host's IPv4 addresses outside loopback.
std::vector<std::string> outsideAddresses() {
  std::vector<std::string> out;
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return out;
  for (const ifaddrs* i = all; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
    if (std::string(text).rfind("127.", 0) != 0) out.push_back(text);
  }
  ::freeifaddrs(all);
  return out;
}

TEST(LocalAddress, ALoopbackStoreMeansLoopback) {
  for (const char* master : {"127.0.0.1", "localhost", "127.0.1.1", "::1"}) {
    EXPECT_EQ(localAddressTowards(master, 29500), "127.0.0.1") << master;
  }
}

TEST(LocalAddress, AStoreElsewhereIsReachedFromAnAddressOutsideLoopback) {
  const std::vector<std::string> mine = outsideAddresses();
  if (mine.empty()) GTEST_SKIP() << "this host has no IPv4 address outside loopback";
  // The store on this host's own address (node 0 of a multi-node job): that address.
  EXPECT_EQ(localAddressTowards(mine.front(), 29500), mine.front());
  // A store on another machine (a documentation address: the route, if any, is the default one; nothing is
  // sent): one of this host's addresses, never loopback.
  const std::string towards = localAddressTowards("192.0.2.200", 29500);
  EXPECT_FALSE(isLoopbackName(towards)) << towards;
}

}  // namespace
}  // namespace ringtrain::comm
