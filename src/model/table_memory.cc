#include "model/table_memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/Allocator.h>
#include <torch/version.h>

#include "ringtrain/core/error.h"

namespace ringtrain::model {
namespace {

// LibTorch 2.3 made Allocator::allocate non-const and added copy_data; Debian's 1.13 has neither.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define RINGTRAIN_ALLOCATE_CONST
#define RINGTRAIN_ALLOCATOR_COPIES 1
#else
#define RINGTRAIN_ALLOCATE_CONST const
#define RINGTRAIN_ALLOCATOR_COPIES 0
#endif

// What a mapping's deleter needs: where it starts and how long it is.
struct Mapping {
  void* start;
  size_t bytes;
};

void unmapTable(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  ::munmap(m->start, m->bytes);
  delete m;
}

// Each allocation is its own anonymous mapping, trimmed to start on a 2 MiB boundary (a huge page can only
// back an aligned 2 MiB range) and returned to the kernel when the tensor goes. Fresh mappings read as zeros.
class HugePageTableAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) RINGTRAIN_ALLOCATE_CONST override {
    RT_CHECK(n <= std::numeric_limits<size_t>::max() / 2, "a table of ", n, " bytes");
    const size_t bytes = roundUpToMultiple(n == 0 ? 1 : n, kHugePageBytes);
    auto mapping = std::make_unique<Mapping>();  // before the mapping: a failed new leaks nothing
    void* raw = ::mmap(nullptr, bytes + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      RT_THROW(Error, "cannot map ", bytes >> 20, " MiB for a table on huge pages (run.huge_pages): ",
               std::strerror(errno));
    }
    const auto base = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t start = roundUpToMultiple(base, kHugePageBytes);
    if (start > base) ::munmap(raw, start - base);
    const uintptr_t end = base + bytes + kHugePageBytes;
    if (end > start + bytes) ::munmap(reinterpret_cast<void*>(start + bytes), end - (start + bytes));
    void* data = reinterpret_cast<void*>(start);
    ::madvise(data, bytes, MADV_HUGEPAGE);  // refused (no THP in this kernel): ordinary pages, still correct
    *mapping = Mapping{data, bytes};
    return {data, mapping.release(), &unmapTable, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }  // the deleter needs its context
#if RINGTRAIN_ALLOCATOR_COPIES
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#endif
};

HugePageTableAllocator& hugePageAllocator() {
  static HugePageTableAllocator allocator;  // stateless: one for the process
  return allocator;
}

}  // namespace

at::Tensor emptyTable(at::IntArrayRef sizes, at::ScalarType dtype, bool huge_pages) {
  size_t bytes = c10::elementSize(dtype);
  for (const int64_t s : sizes) bytes *= static_cast<size_t>(s);
  if (!kTablesMayMap || !huge_pages || bytes < kHugePageMinBytes) {
    return at::empty(sizes, at::TensorOptions().dtype(dtype));
  }
  return at::detail::empty_generic(sizes, &hugePageAllocator(), c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   c10::nullopt);
}

bool onHugePageTable(const at::Tensor& t) {
  return t.defined() && t.has_storage() && t.storage().data_ptr().get_deleter() == &unmapTable;
}

at::Tensor zerosLikeTable(const at::Tensor& like) {
  if (!onHugePageTable(like) || !like.is_contiguous()) return at::zeros_like(like);
  return emptyTable(like.sizes(), like.scalar_type(), true);  // a fresh mapping: zeros already
}

}  // namespace ringtrain::model
