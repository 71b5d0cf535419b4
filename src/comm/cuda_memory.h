// Minimal CUDA memory helpers for code and tests that must stay free of CUDA headers (NCCL tests, tools).
// Defined in cuda_memory.cc, which is built only with the NCCL backend (RINGTRAIN_HAVE_NCCL).
#pragma once

#include <cstddef>

namespace ringtrain::comm::cuda {

// Number of usable devices; 0 when there is no driver or no device (never throws).
int deviceCount();
// Throw CommError with the CUDA error text.
void* allocate(int device, size_t bytes);
void release(void* ptr);
void copyToDevice(void* dst, const void* src, size_t bytes);
void copyToHost(void* dst, const void* src, size_t bytes);

}  // namespace ringtrain::comm::cuda
