#include "ddp/host_shared_tensor.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
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

// Rank 0: a memfd of `bytes` holding `source`, mapped here. Returns "" or why it failed.
std::string create(const at::Tensor& source, size_t bytes, const std::string& what, UniqueFd& fd, Mapping& mapping) {
  fd.reset(::memfd_create(concat("ringtrain-", what).substr(0, 200).c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return failed("memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return failed("ftruncate");
  std::string error = mapping.map(fd.get(), bytes);
  if (!error.empty()) return error;
  std::memcpy(mapping.data(), source.data_ptr(), bytes);
  return "";
}

// Another rank: maps rank 0's memfd, published as "pid fd bytes dtype". Returns "" or why it failed.
std::string attach(const std::string& published, size_t bytes, int dtype, Mapping& mapping) {
  std::istringstream in(published);
  long long pid = 0, fd_number = 0, their_bytes = 0;
  int their_dtype = -1;
  if (!(in >> pid >> fd_number >> their_bytes >> their_dtype)) return concat("rank 0 published '", published, "'");
  if (static_cast<size_t>(their_bytes) != bytes || their_dtype != dtype) {
    return concat("rank 0 shares ", their_bytes, " bytes of dtype ", their_dtype, ", this rank holds ", bytes,
                  " bytes of dtype ", dtype);
  }
  const std::string path = concat("/proc/", pid, "/fd/", fd_number);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return concat("open ", path, ": ", std::strerror(errno));
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) return failed("fstat");
  if (static_cast<size_t>(info.st_size) != bytes) {
    return concat(path, " holds ", info.st_size, " bytes, expected ", bytes);
  }
  return mapping.map(fd.get(), bytes);
}

}  // namespace

at::Tensor shareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what) {
  std::string why;
  at::Tensor shared = tryShareOnHost(comm, source, what, why);
  if (!shared.defined()) RT_THROW(CommError, why);
  return shared;
}

at::Tensor tryShareOnHost(comm::Communicator& comm, const at::Tensor& source, const std::string& what,
                          std::string& why) {
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
  std::string error;
  std::string published;
  if (me == 0) {
    error = create(src, bytes, what, fd, mapping);
    published = error.empty() ? concat(::getpid(), " ", fd.get(), " ", bytes, " ", dtype) : "";
  }
  const auto first = comm.allgatherBytes(bytesOf(published));
  if (me != 0) {
    const std::string from_root = textOf(first.at(0));
    error = from_root.empty() ? "rank 0 could not create the shared memory" : attach(from_root, bytes, dtype, mapping);
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
  const size_t length = bytes;
  void* data = mapping.release();
  return at::from_blob(data, src.sizes(), [length](void* p) { ::munmap(p, length); }, src.options());
}

}  // namespace ringtrain::ddp::detail
