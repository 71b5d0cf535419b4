#include "comm/peer_memory.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <new>
#include <random>
#include <sstream>

#include "comm/spin_wait.h"
#include "core/process_state.h"
#include "ringtrain/core/error.h"

namespace ringtrain::comm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kNoticeSlots = 256;
// A sleeping wait wakes this often to see whether the peer process still exists, so that a rank that died
// fails its peers at once instead of after comm.timeout_s.
constexpr auto kLivenessSlice = std::chrono::milliseconds(100);

// One sender's queue in the receiver's shared region. The sender alone writes head (and the entries), the
// receiver alone writes tail; each is also the futex word the other side sleeps on.
struct NoticeQueue {
  alignas(64) std::atomic<uint32_t> head{0};  // notices posted
  alignas(64) std::atomic<uint32_t> tail{0};  // notices taken
  alignas(64) PeerNotice entries[kNoticeSlots];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free, "the queue words are shared between processes");

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

// Shared (not process-private) futex operations: the words live in a MAP_SHARED mapping of a memfd.
void futexWait(std::atomic<uint32_t>& word, uint32_t expected, std::chrono::nanoseconds timeout) {
  const auto ns = std::max<int64_t>(timeout.count(), 0);
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futexWake(std::atomic<uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace

struct PeerMemory::Shared {
  int memfd = -1;
  size_t bytes = 0;                // of every rank's region: one NoticeQueue per sender
  NoticeQueue* own = nullptr;      // this rank's region: own[s] receives from rank s
  std::vector<NoticeQueue*> peer;  // peer[q]: rank q's region mapped here (own for q == this rank)
  std::atomic<bool> abandoned{false};  // abandonWaits(): the waits below give up at their next look

  ~Shared() {
    for (NoticeQueue* region : peer) {
      if (region != nullptr && region != own) ::munmap(region, bytes);
    }
    if (own != nullptr) ::munmap(own, bytes);
    closeFd();
  }
  void closeFd() {
    if (memfd >= 0) ::close(memfd);
    memfd = -1;
  }
  // Empty on success, else what failed.
  std::string create(int size) {
    bytes = static_cast<size_t>(size) * sizeof(NoticeQueue);
    memfd = ::memfd_create("ringtrain-notices", MFD_CLOEXEC);
    if (memfd < 0) return detail::concat("memfd_create: ", std::strerror(errno));
    if (::ftruncate(memfd, static_cast<off_t>(bytes)) != 0) return detail::concat("ftruncate: ", std::strerror(errno));
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (p == MAP_FAILED) return detail::concat("mmap: ", std::strerror(errno));
    own = new (p) NoticeQueue[static_cast<size_t>(size)];
    peer.assign(static_cast<size_t>(size), nullptr);
    return "";
  }
  std::string map(int q, pid_t pid, int fd) {
    const std::string path = detail::concat("/proc/", pid, "/fd/", fd);
    const int f = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (f < 0) return detail::concat("open ", path, ": ", std::strerror(errno));
    struct stat st {};
    std::string failure;
    if (::fstat(f, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
      failure = detail::concat(path, " is not the notice region of rank ", q);
    } else {
      void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
      if (p == MAP_FAILED) {
        failure = detail::concat("mmap ", path, ": ", std::strerror(errno));
      } else {
        peer[static_cast<size_t>(q)] = static_cast<NoticeQueue*>(p);
      }
    }
    ::close(f);
    return failure;
  }
};

PeerMemory::PeerMemory() = default;
PeerMemory::~PeerMemory() = default;
PeerMemory::PeerMemory(PeerMemory&&) noexcept = default;
PeerMemory& PeerMemory::operator=(PeerMemory&&) noexcept = default;

PeerMemory PeerMemory::agree(dist::Store& store, int rank, int size, std::chrono::milliseconds timeout,
                             bool wanted) {
  PeerMemory pm;
  pm.rank_ = rank;
  if (size <= 1) {
    pm.reason_ = "a single rank";
    return pm;
  }
  if (!wanted) {
    pm.reason_ = "comm.same_host_copy is false";
    return pm;
  }
  // Every rank takes part in both rounds below even when it already knows it will say no: the others wait
  // for its keys.
  std::random_device entropy;
  pm.probe_ = std::make_unique<uint64_t>((static_cast<uint64_t>(entropy()) << 32) ^ entropy() ^ 0x5eedULL);
  pm.shared_ = std::make_unique<Shared>();
  std::string failure = pm.shared_->create(size);
  const std::string boot = bootId();
  std::ostringstream me;
  me << boot << ' ' << ::getpid() << ' ' << reinterpret_cast<uintptr_t>(pm.probe_.get()) << ' ' << *pm.probe_ << ' '
     << (failure.empty() ? pm.shared_->memfd : -1);
  store.set("peer_memory/" + std::to_string(rank), dist::toBytes(me.str()));

  pm.pids_.assign(static_cast<size_t>(size), 0);
  for (int peer = 0; peer < size; ++peer) {
    std::istringstream in(dist::toString(store.get("peer_memory/" + std::to_string(peer), timeout)));
    std::string peer_boot;
    pid_t pid = 0;
    uintptr_t address = 0;
    uint64_t nonce = 0;
    int memfd = -1;
    in >> peer_boot >> pid >> address >> nonce >> memfd;
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
    } else if (memfd < 0) {
      failure = detail::concat("rank ", peer, " has no notice region");
    } else {
      failure = pm.shared_->map(peer, pid, memfd);
    }
  }
  // Everyone's verdict, so that all ranks decide alike. Once all are in, every peer has opened this rank's
  // region: the descriptor is no longer needed (the mappings keep the memory).
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
  if (pm.enabled_) {
    pm.shared_->closeFd();
    pm.shared_->peer[static_cast<size_t>(rank)] = pm.shared_->own;
  } else {
    pm.shared_.reset();
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

namespace {

// Sleeps on `word` until ready() holds; TimeoutError at the deadline, CommError once the peer is gone.
template <typename Ready>
void waitFor(std::atomic<uint32_t>& word, Ready ready, pid_t pid, int peer, std::chrono::milliseconds timeout,
             std::chrono::nanoseconds spin, const char* what, const std::atomic<bool>& abandoned) {
  const auto deadline = Clock::now() + timeout;
  // The poll ends where the communicator gives up, and lasts at most one liveness slice: a peer that died
  // is noticed as soon as by a sleeping wait.
  spinUntil([&] { return ready() || abandoned.load(std::memory_order_relaxed); },
            std::min<std::chrono::nanoseconds>(pollBudget(spin, timeout), kLivenessSlice));
  while (true) {
    const uint32_t seen = word.load(std::memory_order_acquire);
    if (ready()) return;
    if (abandoned.load(std::memory_order_relaxed)) {
      RT_THROW(CommError, what, " rank ", peer, ": given up, the communicator is being destroyed");
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      RT_THROW(TimeoutError, what, " rank ", peer, ": nothing within ",
               static_cast<double>(timeout.count()) / 1000.0, " s");
    }
    futexWait(word, seen, std::min<Clock::duration>(deadline - now, kLivenessSlice));
    if (!ready() && processGone(pid)) {
      RT_THROW(CommError, what, " rank ", peer, ": its process (pid ", pid, ") is gone");
    }
  }
}

}  // namespace

void PeerMemory::post(int peer, PeerNotice notice, std::chrono::milliseconds timeout) const {
  RT_CHECK_T(CommError, enabled_ && peer != rank_, "same-host notice to rank ", peer, " is not available: ", reason_);
  NoticeQueue& q = shared_->peer.at(static_cast<size_t>(peer))[rank_];
  const uint32_t head = q.head.load(std::memory_order_relaxed);
  waitFor(
      q.tail, [&] { return head - q.tail.load(std::memory_order_acquire) < kNoticeSlots; },
      pids_[static_cast<size_t>(peer)], peer, timeout, spin_, "same-host notice queue full: waiting for",
      shared_->abandoned);
  q.entries[head % kNoticeSlots] = notice;
  q.head.store(head + 1, std::memory_order_release);
  futexWake(q.head);
}

void PeerMemory::abandonWaits() const {
  if (shared_) shared_->abandoned.store(true, std::memory_order_relaxed);
}

PeerNotice PeerMemory::take(int peer, std::chrono::milliseconds timeout) const {
  RT_CHECK_T(CommError, enabled_ && peer != rank_, "same-host notice from rank ", peer, " is not available: ",
             reason_);
  NoticeQueue& q = shared_->own[peer];
  const uint32_t tail = q.tail.load(std::memory_order_relaxed);
  waitFor(
      q.head, [&] { return q.head.load(std::memory_order_acquire) != tail; }, pids_[static_cast<size_t>(peer)], peer,
      timeout, spin_, "same-host notice: waiting for", shared_->abandoned);
  const PeerNotice notice = q.entries[tail % kNoticeSlots];
  q.tail.store(tail + 1, std::memory_order_release);
  futexWake(q.tail);
  return notice;
}

void exchangeOffers(Communicator& comm, const std::function<PeerOffer(int peer)>& offer,
                    const std::function<void*(int peer, size_t bytes)>& into, std::chrono::milliseconds timeout) {
  // Marker bytes (top byte of PeerNotice::message), checked on arrival so that ranks doing different things
  // fail instead of reading each other's memory wrongly. An offer carries its length in the low 56 bits.
  constexpr uint64_t kOfferMarker = uint64_t{0xB1} << 56;
  constexpr uint64_t kDoneMarker = uint64_t{0xB2} << 56;
  constexpr uint64_t kMarkerMask = uint64_t{0xFF} << 56;
  const int size = comm.size(), me = comm.rank();
  auto outOfStep = [](int peer, const PeerNotice& n) {
    return detail::concat("rank ", peer, " is out of step (notice ", n.message, ")");
  };
  for (int i = 1; i < size; ++i) {
    const int peer = (me + i) % size;
    const PeerOffer o = offer(peer);
    RT_CHECK_T(CommError, o.bytes < (uint64_t{1} << 56), "same-host offer of ", o.bytes, " bytes");
    comm.postPeerNotice(peer, PeerNotice{kOfferMarker | o.bytes, reinterpret_cast<uint64_t>(o.data)}, timeout);
  }
  for (int i = 1; i < size; ++i) {
    const int peer = (me + size - i) % size;
    const PeerNotice n = comm.takePeerNotice(peer, timeout);
    RT_CHECK_T(CommError, (n.message & kMarkerMask) == kOfferMarker, outOfStep(peer, n));
    const size_t bytes = n.message & ~kMarkerMask;
    void* target = into(peer, bytes);
    if (bytes > 0) comm.readPeerMemory(peer, reinterpret_cast<const void*>(n.value), target, bytes);
  }
  for (int i = 1; i < size; ++i) comm.postPeerNotice((me + i) % size, PeerNotice{kDoneMarker, 0}, timeout);
  for (int i = 1; i < size; ++i) {
    const int peer = (me + size - i) % size;
    const PeerNotice n = comm.takePeerNotice(peer, timeout);
    RT_CHECK_T(CommError, n.message == kDoneMarker, outOfStep(peer, n));
  }
}

}  // namespace ringtrain::comm
