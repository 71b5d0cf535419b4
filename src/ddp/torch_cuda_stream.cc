#include "ddp/torch_cuda_stream.h"

#include <c10/cuda/CUDAStream.h>

namespace ringtrain::ddp::detail {

void* currentCudaStream(int device_index) {
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index)).stream();
}

}  // namespace ringtrain::ddp::detail
