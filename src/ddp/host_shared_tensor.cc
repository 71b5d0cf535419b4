#include "ddp/host_shared_tensor.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/unique_fd.h"
#include "ringtrain/core/error.h"

namespace ringtrain::ddp::detail {
namespace {

using ::ringtrain::detail::concat;

std::vector<uint8_t> bytesOf(const std::string& text) { return {text.begin(), text.end()}; }
std::string textOf(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

std::string failed(const char* call) { return concat(call, ": ", std::strerror(errno)); }

// A MAP_SHARED mapping, unmapped unless released into the tensor that owns it.
class Mapping {
 public:
  Mapping() = default;
  ~Mapping() {
    if (data_ != nullptr) ::munmap(data_, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  // Maps `bytes` of `fd`; returns "" or why it failed.
  std::string map(int fd, size_t bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return failed("mmap");
    data_ = p;
    bytes_ = bytes;
    return "";
  }
  void* data() const { return data_; }
  void* release() { return std::exchange(data_, nullptr); }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A memfd of `length` bytes (`flags` beside MFD_CLOEXEC), mapped here. Returns "" or why it failed.
std::string createMapped(size_t length, unsigned flags, const std::string& what, UniqueFd& fd, Mapping& mapping) {
  fd.reset(::memfd_create(concat("ringtrain-", what).substr(0, 200).c_str(), MFD_CLOEXEC | flags));
  if (!fd.valid()) return failed("memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(length)) != 0) return failed("ftruncate");
  // Huge pages are taken now: mmap reserves them from the host's pool, but a cgroup's hugetlb limit (or a
  // cpuset's memory nodes) is only met at the first touch, which would be SIGBUS in the copy below.
  if ((flags & MFD_HUGETLB) != 0 && ::fallocate(fd.get(), 0, 0, static_cast<off_t>(length)) != 0) {
    return failed("fallocate");
  }
  return mapping.map(fd.get(), length);
}

// Rank 0: a memfd holding `source` (`bytes`), mapped here; on the host's reserved 2 MiB pages (`on_huge` 1)
// where `huge_pages` asks and it has enough, else (`why_not_huge` says why) on ordinary ones. Sets `length`,
// the bytes mapped (a whole number of huge pages on them). Returns "" or why it failed.
std::string create(const at::Tensor& source, size_t bytes, const std::string& what, bool huge_pages, UniqueFd& fd,
                   Mapping& mapping, size_t& length, int& on_huge, std::string& why_not_huge) {
  if (huge_pages && bytes >= kHugePageMinBytes) {
    length = roundUpToMultiple(bytes, kHugePageBytes);
    why_not_huge = createMapped(length, MFD_HUGETLB | MFD_HUGE_2MB, what, fd, mapping);
    on_huge = why_not_huge.empty() ? 1 : 0;
    if (!on_huge) fd.reset();  // nothing was mapped: createMapped maps last
  }
  if (mapping.data() == nullptr) {
    length = bytes;
    std::string error = createMapped(length, 0, what, fd, mapping);
    if (!error.empty()) return error;
  }
  std::memcpy(mapping.data(), source.data_ptr(), bytes);
  return "";
}

// Another rank: maps rank 0's memfd, published as "pid fd bytes dtype length huge" (length: the bytes mapped,
// a whole number of huge pages where huge is 1). Sets `length` and `on_huge`. Returns "" or why it failed.
std::string attach(const std::string& published, size_t bytes, int dtype, Mapping& mapping, size_t& length,
                   int& on_huge) {
  std::istringstream in(published);
  long long pid = 0, fd_number = 0, their_bytes = 0, their_length = 0;
  int their_dtype = -1;
  if (!(in >> pid >> fd_number >> their_bytes >> their_dtype >> their_length >> on_huge)) {
    return concat("rank 0 published '", published, "'");
  }
  if (static_cast<size_t>(their_bytes) != bytes || their_dtype != dtype) {
    return concat("rank 0 shares ", their_bytes, " bytes of dtype ", their_dtype, ", this rank holds ", bytes,
                  " bytes of dtype ", dtype);
  }
  if (their_length < their_bytes) return concat("rank 0 published '", published, "'");
  length = static_cast<size_t>(their_length);
  const std::string path = concat("/proc/", pid, "/fd/", fd_number);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return concat("open ", path, ": ", std::strerror(errno));
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) return failed("fstat");
  if (static_cast<size_t>(info.st_size) != length) {
    return concat(path, " holds ", info.st_size, " bytes, expected ", length);
  }
  return mapping.map(fd.get(), length);
}

}  // namespace

namespace {
// The 2 MiB pages in the host's pool (/proc/meminfo): total and free; zeros where its huge pages are
// another size or it has none.
std::pair<long long, long long> poolPages() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  long long total = 0, free = 0, size_kb = 0;
  while (std::getline(in, line)) {
    for (auto [field, value] : {std::pair{"HugePages_Total:", &total}, {"HugePages_Free:", &free}, {"Hugepagesize:", &size_kb}}) {
      if (line.rfind(field, 0) == 0) *value = std::atoll(line.c_str() + std::strlen(field));
    }
  }
  if (size_kb != 2048) return {0, 0};
  return {total, free};
}
}  // namespace

HugePageTally::HugePageTally() { std::tie(pool_total_, pool_free_) = poolPages(); }

void HugePageTally::add(size_t bytes, bool on_huge_pages, const std::string& why_not) {
  if (bytes < kHugePageMinBytes) return;
  ++asked_;
  pages_ += roundUpToMultiple(bytes, kHugePageBytes) / kHugePageBytes;
  if (on_huge_pages) ++on_huge_;
  if (why_not_.empty()) why_not_ = why_not;
}

std::string HugePageTally::report(const std::string& what) const {
  if (asked_ == 0) return "";
  if (on_huge_ == asked_) return concat("the ", what, " are on 2 MiB pages from the host's pool (vm.nr_hugepages)");
  const std::string which = on_huge_ == 0 ? concat("the ", what) : concat(asked_ - on_huge_, " of the ", asked_, " ", what);
  std::string text = concat(which, " are on 4 KiB pages (", why_not_, "): they need ", pages_,
                            " 2 MiB pages from the host's pool, which had ", pool_free_, " free of ", pool_total_,
                            " before the job took any");
  const long long missing = static_cast<long long>(pages_) - pool_free_;
  if (missing > 0) {
    text += concat("; as root, sysctl vm.nr_hugepages=", pool_total_ + missing, " makes room for them");
  } else {
    text += " (enough: what refused them is above, a cgroup's hugetlb limit perhaps)";
  }
  return text;
}

at::Tensor shareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what,
                       const HugePages& huge) {
  std::string why;
  at::Tensor shared = tryShareOnHost(comm, source, what, why, huge);
  if (!shared.defined()) RT_THROW(CommError, why);
  return shared;
}

at::Tensor tryShareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what,
                          std::string& why, const HugePages& huge) {
  RT_CHECK(source.is_cpu(), "sharing ", what, " between ranks on one host: the tensor is on ", source.device());
  RT_CHECK(comm.size() == 1 || comm.canReadPeerMemory(), "sharing ", what,
           " between ranks on one host: the ranks do not share a host (or comm.same_host_copy is off)");
  const at::Tensor src = source.detach().contiguous();
  const size_t bytes = static_cast<size_t>(src.numel()) * src.element_size();
  if (bytes == 0) return src.clone();  // shapes are the same on every rank, so every rank returns here
  const int me = comm.rank();
  const int dtype = static_cast<int>(src.scalar_type());

  // Round 1: rank 0 creates and publishes; the others map what it published.
  UniqueFd fd;
  Mapping mapping;
  size_t length = bytes;
  std::string error;
  std::string published;
  std::string why_not_huge;
  int on_huge = 0;
  if (me == 0) {
    error = create(src, bytes, what, huge.asked, fd, mapping, length, on_huge, why_not_huge);
    published = error.empty() ? concat(::getpid(), " ", fd.get(), " ", bytes, " ", dtype, " ", length, " ", on_huge) : "";
  }
  const auto first = comm.allgatherBytes(bytesOf(published));
  if (me != 0) {
    const std::string from_root = textOf(first.at(0));
    error = from_root.empty() ? "rank 0 could not create the shared memory"
                              : attach(from_root, bytes, dtype, mapping, length, on_huge);
  }
  // Round 2: every rank says whether it is mapped, so that all succeed or all throw. Rank 0 keeps its
  // descriptor open until then: the others open it through /proc.
  const auto verdicts = comm.allgatherBytes(bytesOf(error));
  std::string report;
  for (size_t r = 0; r < verdicts.size(); ++r) {
    if (!verdicts[r].empty()) report += concat("; rank ", r, ": ", textOf(verdicts[r]));
  }
  if (!report.empty()) {
    why = concat("sharing ", what, " (", bytes, " bytes) between ranks on one host failed", report);
    return at::Tensor();
  }
  if (huge.why_not != nullptr) *huge.why_not = why_not_huge;
  if (huge.used != nullptr) *huge.used = on_huge != 0;
  void* data = mapping.release();
  return at::from_blob(data, src.sizes(), [length](void* p) { ::munmap(p, length); }, src.options());
}

}  // namespace ringtrain::ddp::detail
