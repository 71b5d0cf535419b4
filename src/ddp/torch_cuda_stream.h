// The CUDA stream LibTorch issues work on, for the communication layer's buffers (comm::Device::cuda_stream):
// NCCL orders its own stream after it with an event, so gradients produced on a side stream (a
// c10::cuda::CUDAStreamGuard around backward) are complete before they travel. Compiled only against a
// LibTorch with CUDA, and only with the NCCL backend (the one reader of the stream).
#pragma once

namespace ringtrain::ddp::detail {

// The current stream of CUDA device `device_index`, as a cudaStream_t.
void* currentCudaStream(int device_index);

}  // namespace ringtrain::ddp::detail
