#include "ringtrain/ddp/tensor_buffer.h"

#include "ringtrain/build_config.h"
#include "ringtrain/core/error.h"
#if RINGTRAIN_TORCH_HAS_CUDA && RINGTRAIN_HAVE_NCCL
#include "ddp/torch_cuda_stream.h"
#endif

namespace ringtrain::ddp {

comm::DataType toCommType(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return comm::DataType::kFloat32;
    case c10::ScalarType::Double: return comm::DataType::kFloat64;
    case c10::ScalarType::Half: return comm::DataType::kFloat16;
    case c10::ScalarType::BFloat16: return comm::DataType::kBFloat16;
    case c10::ScalarType::Long: return comm::DataType::kInt64;
    case c10::ScalarType::Int: return comm::DataType::kInt32;
    case c10::ScalarType::Byte: return comm::DataType::kUInt8;
    default: RT_THROW(Error, "tensors of type ", c10::toString(type), " cannot be communicated");
  }
}

comm::Buffer asBuffer(const at::Tensor& tensor) {
  RT_CHECK(tensor.is_contiguous(), "communicated tensors must be contiguous");
  comm::Buffer buffer;
  buffer.data = tensor.data_ptr();
  buffer.count = static_cast<size_t>(tensor.numel());
  buffer.dtype = toCommType(tensor.scalar_type());
  buffer.owner = std::make_shared<const at::Tensor>(tensor);
  if (tensor.is_cuda()) {
    buffer.device.cuda_index = tensor.get_device();
#if RINGTRAIN_TORCH_HAS_CUDA && RINGTRAIN_HAVE_NCCL
    // The tensor was produced on LibTorch's current stream: NCCL waits for that one, not the default stream.
    buffer.device.cuda_stream = detail::currentCudaStream(buffer.device.cuda_index);
#endif
  }
  return buffer;
}

}  // namespace ringtrain::ddp
