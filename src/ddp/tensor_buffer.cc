#include "ringtrain/ddp/tensor_buffer.h"

#include "ringtrain/core/error.h"

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
  if (tensor.is_cuda()) buffer.device.cuda_index = tensor.get_device();
  return buffer;
}

}  // namespace ringtrain::ddp
