// Element-wise reduction kernels on raw host buffers, shared by every algorithm that reduces on the CPU
// (the ring allreduce, Gloo's reduce function, allreduce over MPI for 16-bit floats). float16 and
// bfloat16 are widened to float, reduced, and rounded back to nearest-even.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringtrain/comm/communicator.h"

namespace ringtrain::comm {

// dst[i] = op(dst[i], src[i]) for i < count. kAverage accumulates like kSum (finish with finishAverage).
void reduceInto(void* dst, const void* src, size_t count, DataType dtype, ReduceOp op);
// out[i] = op(a[i], b[i]); out may alias a or b.
void reduceTo(void* out, const void* a, const void* b, size_t count, DataType dtype, ReduceOp op);
// Divides a sum by world_size in place (integers: truncating division); for kAverage after summing.
void finishAverage(void* data, size_t count, DataType dtype, int world_size);

// IEEE half and bfloat16 conversions (round to nearest even; NaN stays NaN).
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);
float bfloat16ToFloat(uint16_t b);
uint16_t floatToBFloat16(float f);

}  // namespace ringtrain::comm
