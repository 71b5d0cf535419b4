#include "cuda_memory.h"

#include <cuda_runtime.h>

#include "ringtrain/core/error.h"

namespace ringtrain::comm::cuda {
namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) RT_THROW(CommError, what, " failed: ", cudaGetErrorString(e));
}
}  // namespace

int deviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void* allocate(int device, size_t bytes) {
  check(cudaSetDevice(device), "cudaSetDevice");
  void* p = nullptr;
  check(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  return p;
}

void release(void* ptr) {
  if (ptr != nullptr) cudaFree(ptr);
}

void copyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

void copyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

}  // namespace ringtrain::comm::cuda
