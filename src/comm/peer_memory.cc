#include "comm/peer_memory.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "ringtrain/core/error.h"

namespace ringtrain::comm {
namespace {

std::string bootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

// One process_vm_readv call may copy less than asked (it stops at the first unmapped page, or early for
// large ranges): loop until done. Returns 0 or the errno of the failing call.
int readFrom(pid_t pid, const void* remote, void* local, size_t bytes) {
  auto* out = static_cast<uint8_t*>(local);
  auto from = reinterpret_cast<uintptr_t>(remote);
  while (bytes > 0) {
    iovec mine{out, bytes};
    iovec theirs{reinterpret_cast<void*>(from), bytes};
    const ssize_t n = ::process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EFAULT;
    out += n;
    from += static_cast<uintptr_t>(n);
    bytes -= static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

PeerMemory PeerMemory::agree(dist::Store& store, int rank, int size, std::chrono::milliseconds timeout,
                             bool wanted) {
  PeerMemory pm;
  if (size <= 1) {
    pm.reason_ = "a single rank";
    return pm;
  }
  if (!wanted) {
    pm.reason_ = "comm.same_host_copy is false";
    return pm;
  }
  // Every rank takes part in both rounds below even when it already knows it cannot read a peer: the
  // others wait for its keys.
  std::random_device entropy;
  pm.probe_ = std::make_unique<uint64_t>((static_cast<uint64_t>(entropy()) << 32) ^ entropy() ^ 0x5eedULL);
  std::ostringstream me;
  me << bootId() << ' ' << ::getpid() << ' ' << reinterpret_cast<uintptr_t>(pm.probe_.get()) << ' ' << *pm.probe_;
  store.set("peer_memory/" + std::to_string(rank), dist::toBytes(me.str()));

  const std::string boot = bootId();
  pm.pids_.assign(static_cast<size_t>(size), 0);
  std::string failure;
  for (int peer = 0; peer < size; ++peer) {
    std::istringstream in(dist::toString(store.get("peer_memory/" + std::to_string(peer), timeout)));
    std::string peer_boot;
    pid_t pid = 0;
    uintptr_t address = 0;
    uint64_t nonce = 0;
    in >> peer_boot >> pid >> address >> nonce;
    pm.pids_[static_cast<size_t>(peer)] = pid;
    if (peer == rank || !failure.empty()) continue;
    if (!in || peer_boot.empty() || peer_boot != boot) {
      failure = detail::concat("rank ", peer, " runs on another host (kernel boot id differs)");
      continue;
    }
    uint64_t seen = 0;
    const int err = readFrom(pid, reinterpret_cast<const void*>(address), &seen, sizeof(seen));
    if (err != 0) {
      failure = detail::concat("process_vm_readv of rank ", peer, " (pid ", pid, "): ", std::strerror(err));
    } else if (seen != nonce) {
      failure = detail::concat("pid ", pid, " of rank ", peer, " is another process here (PID namespaces differ)");
    }
  }
  // Everyone's verdict, so that all ranks decide alike.
  store.set("peer_memory_ok/" + std::to_string(rank), dist::toBytes(failure.empty() ? "ok" : failure));
  pm.enabled_ = true;
  pm.reason_.clear();
  for (int peer = 0; peer < size; ++peer) {
    const std::string verdict = dist::toString(store.get("peer_memory_ok/" + std::to_string(peer), timeout));
    if (verdict != "ok" && pm.enabled_) {
      pm.enabled_ = false;
      pm.reason_ = detail::concat("rank ", peer, ": ", verdict);
    }
  }
  return pm;
}

void PeerMemory::read(int peer, const void* remote, void* local, size_t bytes) const {
  RT_CHECK_T(CommError, enabled_, "same-host copy from rank ", peer, " is not available: ", reason_);
  const pid_t pid = pids_.at(static_cast<size_t>(peer));
  const int err = readFrom(pid, remote, local, bytes);
  if (err != 0) {
    RT_THROW(CommError, "same-host copy of ", bytes, " bytes from rank ", peer, " (pid ", pid, ") failed: ",
             std::strerror(err), err == ESRCH ? " (the process is gone)" : "");
  }
}

}  // namespace ringtrain::comm
