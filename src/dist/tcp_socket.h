// Small TCP helpers shared by the store server and client: listen, connect, and whole-buffer send/receive
// against a deadline (poll-based, so no call blocks past it).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "core/unique_fd.h"

namespace ringtrain::dist::net {

using Clock = std::chrono::steady_clock;

// Binds a non-blocking listening socket to `addr` (numeric or a resolvable name) and `port` (0: any free
// port); returns the socket and writes the bound port. Throws CommError; for a port in use, it names
// `port_advice`, how the caller's user chooses another.
UniqueFd listenTcp(const std::string& addr, int port, int* bound_port, const std::string& port_advice);
// The address listenTcp would bind first for `host`, when that is a loopback one (127.0.0.1, Debian's
// 127.0.1.1 for the host's own name, ::1); "" otherwise, or when `host` does not resolve.
std::string loopbackBindAddress(const std::string& host);
// The local address a datagram to `host` would leave from (a UDP socket connected to it, which sends
// nothing), or "" when `host` does not resolve or no route leads there.
std::string routeSourceAddress(const std::string& host, int port);
// This host's first IPv4 address outside loopback, else its first IPv6 one (not link-local), or "".
std::string firstAddressOutsideLoopback();
// One connection attempt to every address `host` resolves to, each bounded by `deadline`. Returns an
// invalid fd and sets `error` when none answered (refused, unreachable, timed out).
UniqueFd tryConnectTcp(const std::string& host, int port, Clock::time_point deadline, std::string* error);
// "1.2.3.4:5678" for the peer of a connected socket.
std::string peerName(int fd);
// Sends/receives exactly n bytes. Return false on timeout; throw CommError on a closed or broken
// connection (`what` names the other side in the message).
bool sendAll(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& what);
bool recvAll(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& what);
// Milliseconds until `deadline`, clamped to [0, INT_MAX] for poll().
int pollTimeoutMs(Clock::time_point deadline);

}  // namespace ringtrain::dist::net
