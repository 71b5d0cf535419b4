// The bridge from LibTorch tensors to the communication layer's raw buffers.
#pragma once

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"

namespace ringtrain::ddp {

// The communication dtype of a tensor's scalar type; throws ringtrain::Error for types comm cannot move.
comm::DataType toCommType(c10::ScalarType type);
// A view of a contiguous tensor's storage as a comm buffer (no copy); the tensor must outlive its use.
comm::Buffer asBuffer(const at::Tensor& tensor);

}  // namespace ringtrain::ddp
