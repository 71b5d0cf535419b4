// Elementwise reduction loops shared by the ring allreduce (and any backend that reduces on the host).
// float16 and bfloat16 are widened to float32, reduced, and rounded back to nearest even; the loops are
// branch-free so the compiler vectorizes them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringtrain/comm/communicator.h"

namespace ringtrain::comm::detail {

float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);  // round to nearest even; overflow -> inf; NaN stays NaN
float bfloat16ToFloat(uint16_t h);
uint16_t floatToBFloat16(float f);  // round to nearest even; NaN stays NaN

// dst[i] = op(dst[i], src[i]) for `count` elements. kAverage reduces like kSum (divide afterwards).
void reduceInto(void* dst, const void* src, size_t count, DataType dtype, ReduceOp op);
// data[i] /= divisor: the last step of an average. Integers truncate toward zero.
void divideInPlace(void* data, size_t count, DataType dtype, int divisor);

}  // namespace ringtrain::comm::detail
