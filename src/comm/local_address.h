// The address a rank gives its peers to reach it at (Gloo's listening address).
#pragma once

#include <string>

namespace ringtrain::comm {

// For a job whose store is at `master` (an address or a host name) and `port`: loopback where `master` is
// one (the job is on one node); else the local address of the interface that the route to `master` leaves
// by (a UDP socket connected to it, which sends nothing), or, where that route is a loopback one (`master`
// is this host's own name, mapped to 127.0.1.1 by Debian's /etc/hosts), this host's first address outside
// loopback. The host name (what ringtrain gave before) only where neither is found: it may resolve to
// 127.0.1.1, which peers on other machines cannot reach.
std::string localAddressTowards(const std::string& master, int port);

bool isLoopbackName(const std::string& address);

}  // namespace ringtrain::comm
