#include "ringtrain/comm/reduce.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ringtrain/core/error.h"

namespace ringtrain::comm {

float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int shift = 0;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
      }
      mantissa &= 0x3ffu;
      bits = sign | (static_cast<uint32_t>(127 - 15 + 1 - shift) << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t floatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                                               // below the smallest normal half
    if (abs < 0x33000000u) return sign;                                  // rounds to zero
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    // value = mantissa * 2^(exponent - 150); in units of the smallest half subnormal (2^-24):
    const uint32_t shift = 126 - exponent;  // 14..24
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t q = mantissa >> shift;
    if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // normal: rebias the exponent, round the mantissa from 23 to 10 bits
  uint32_t h = ((abs >> 23) - 112) << 10 | ((abs >> 13) & 0x3ffu);
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: still right
  return static_cast<uint16_t>(sign | h);
}

float bfloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t floatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

namespace {

template <typename T>
T apply(T a, T b, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage: return a + b;
    case ReduceOp::kMax: return std::max(a, b);
    case ReduceOp::kMin: return std::min(a, b);
  }
  return a;
}

template <typename T>
void reduceTyped(T* out, const T* a, const T* b, size_t count, ReduceOp op) {
  // Separate loops per op so the compiler vectorizes each.
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage:
      for (size_t i = 0; i < count; ++i) out[i] = a[i] + b[i];
      return;
    case ReduceOp::kMax:
      for (size_t i = 0; i < count; ++i) out[i] = std::max(a[i], b[i]);
      return;
    case ReduceOp::kMin:
      for (size_t i = 0; i < count; ++i) out[i] = std::min(a[i], b[i]);
      return;
  }
}

template <float (*ToFloat)(uint16_t), uint16_t (*FromFloat)(float)>
void reduce16(uint16_t* out, const uint16_t* a, const uint16_t* b, size_t count, ReduceOp op) {
  for (size_t i = 0; i < count; ++i) out[i] = FromFloat(apply(ToFloat(a[i]), ToFloat(b[i]), op));
}

}  // namespace

void reduceTo(void* out, const void* a, const void* b, size_t count, DataType dtype, ReduceOp op) {
  switch (dtype) {
    case DataType::kFloat32:
      return reduceTyped(static_cast<float*>(out), static_cast<const float*>(a), static_cast<const float*>(b),
                         count, op);
    case DataType::kFloat64:
      return reduceTyped(static_cast<double*>(out), static_cast<const double*>(a),
                         static_cast<const double*>(b), count, op);
    case DataType::kInt64:
      return reduceTyped(static_cast<int64_t*>(out), static_cast<const int64_t*>(a),
                         static_cast<const int64_t*>(b), count, op);
    case DataType::kInt32:
      return reduceTyped(static_cast<int32_t*>(out), static_cast<const int32_t*>(a),
                         static_cast<const int32_t*>(b), count, op);
    case DataType::kUInt8:
      return reduceTyped(static_cast<uint8_t*>(out), static_cast<const uint8_t*>(a),
                         static_cast<const uint8_t*>(b), count, op);
    case DataType::kFloat16:
      return reduce16<halfToFloat, floatToHalf>(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(a),
                                                static_cast<const uint16_t*>(b), count, op);
    case DataType::kBFloat16:
      return reduce16<bfloat16ToFloat, floatToBFloat16>(static_cast<uint16_t*>(out),
                                                        static_cast<const uint16_t*>(a),
                                                        static_cast<const uint16_t*>(b), count, op);
  }
  RT_THROW(Error, "reduce: unknown dtype ", static_cast<int>(dtype));
}

void reduceInto(void* dst, const void* src, size_t count, DataType dtype, ReduceOp op) {
  reduceTo(dst, dst, src, count, dtype, op);
}

namespace {
template <typename T>
void divide(T* data, size_t count, T n) {
  for (size_t i = 0; i < count; ++i) data[i] /= n;
}
template <float (*ToFloat)(uint16_t), uint16_t (*FromFloat)(float)>
void divide16(uint16_t* data, size_t count, float n) {
  for (size_t i = 0; i < count; ++i) data[i] = FromFloat(ToFloat(data[i]) / n);
}
}  // namespace

void finishAverage(void* data, size_t count, DataType dtype, int world_size) {
  RT_CHECK_GT(world_size, 0);
  if (world_size == 1) return;
  switch (dtype) {
    case DataType::kFloat32: return divide(static_cast<float*>(data), count, static_cast<float>(world_size));
    case DataType::kFloat64: return divide(static_cast<double*>(data), count, static_cast<double>(world_size));
    case DataType::kInt64: return divide(static_cast<int64_t*>(data), count, static_cast<int64_t>(world_size));
    case DataType::kInt32: return divide(static_cast<int32_t*>(data), count, static_cast<int32_t>(world_size));
    case DataType::kUInt8: return divide(static_cast<uint8_t*>(data), count, static_cast<uint8_t>(world_size));
    case DataType::kFloat16:
      return divide16<halfToFloat, floatToHalf>(static_cast<uint16_t*>(data), count, static_cast<float>(world_size));
    case DataType::kBFloat16:
      return divide16<bfloat16ToFloat, floatToBFloat16>(static_cast<uint16_t*>(data), count,
                                                        static_cast<float>(world_size));
  }
}

}  // namespace ringtrain::comm
