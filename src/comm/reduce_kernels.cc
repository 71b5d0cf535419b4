#include "reduce_kernels.h"

#include <cstring>

#include "ringtrain/core/error.h"

namespace ringtrain::comm::detail {

namespace {

inline uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float floatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE half <-> float without branches (the construction of Maratyszcza's FP16 library): the float
// unit's own round-to-nearest-even does the rounding, and subnormals, infinities and NaN come out right.
inline float halfToFloatInline(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = floatOf((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = floatOf((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t result = sign | (two_w < (1u << 27) ? bitsOf(denormalized) : bitsOf(normalized));
  return floatOf(result);
}

inline uint16_t floatToHalfInline(float f) {
  const float abs_f = floatOf(bitsOf(f) & 0x7FFFFFFFu);
  float base = (abs_f * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = bitsOf(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = floatOf((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = bitsOf(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

inline float bfloat16ToFloatInline(uint16_t h) { return floatOf(static_cast<uint32_t>(h) << 16); }

inline uint16_t floatToBFloat16Inline(float f) {
  const uint32_t u = bitsOf(f);
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x0040u) : rounded);
}

struct Sum {
  template <typename T>
  T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T>
  T operator()(T a, T b) const { return a < b ? b : a; }
};
struct Min {
  template <typename T>
  T operator()(T a, T b) const { return b < a ? b : a; }
};

template <typename T, typename Op>
void loop(T* __restrict dst, const T* __restrict src, size_t count, Op op) {
  for (size_t i = 0; i < count; ++i) dst[i] = op(dst[i], src[i]);
}

template <typename ToFloat, typename FromFloat, typename Op>
void loop16(uint16_t* __restrict dst, const uint16_t* __restrict src, size_t count, ToFloat to, FromFloat from,
            Op op) {
  for (size_t i = 0; i < count; ++i) dst[i] = from(op(to(dst[i]), to(src[i])));
}

template <typename Op>
void dispatch(void* dst, const void* src, size_t count, DataType dtype, Op op) {
  switch (dtype) {
    case DataType::kFloat32:
      return loop(static_cast<float*>(dst), static_cast<const float*>(src), count, op);
    case DataType::kFloat64:
      return loop(static_cast<double*>(dst), static_cast<const double*>(src), count, op);
    case DataType::kInt64:
      return loop(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), count, op);
    case DataType::kInt32:
      return loop(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), count, op);
    case DataType::kUInt8:
      return loop(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), count,
                  [op](uint8_t a, uint8_t b) { return static_cast<uint8_t>(op(int(a), int(b))); });
    case DataType::kFloat16:
      return loop16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), count,
                    [](uint16_t h) { return halfToFloatInline(h); }, [](float f) { return floatToHalfInline(f); },
                    op);
    case DataType::kBFloat16:
      return loop16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), count,
                    [](uint16_t h) { return bfloat16ToFloatInline(h); },
                    [](float f) { return floatToBFloat16Inline(f); }, op);
  }
  RT_THROW(Error, "reduceInto: unknown dtype ", static_cast<int>(dtype));
}

template <typename T, typename Scale>
void scaleLoop(T* __restrict data, size_t count, Scale scale) {
  for (size_t i = 0; i < count; ++i) data[i] = scale(data[i]);
}

}  // namespace

float halfToFloat(uint16_t h) { return halfToFloatInline(h); }
uint16_t floatToHalf(float f) { return floatToHalfInline(f); }
float bfloat16ToFloat(uint16_t h) { return bfloat16ToFloatInline(h); }
uint16_t floatToBFloat16(float f) { return floatToBFloat16Inline(f); }

void reduceInto(void* dst, const void* src, size_t count, DataType dtype, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage: return dispatch(dst, src, count, dtype, Sum{});
    case ReduceOp::kMax: return dispatch(dst, src, count, dtype, Max{});
    case ReduceOp::kMin: return dispatch(dst, src, count, dtype, Min{});
  }
  RT_THROW(Error, "reduceInto: unknown op ", static_cast<int>(op));
}

void divideInPlace(void* data, size_t count, DataType dtype, int divisor) {
  switch (dtype) {
    case DataType::kFloat32: {
      const float d = static_cast<float>(divisor);
      return scaleLoop(static_cast<float*>(data), count, [d](float v) { return v / d; });
    }
    case DataType::kFloat64: {
      const double d = divisor;
      return scaleLoop(static_cast<double*>(data), count, [d](double v) { return v / d; });
    }
    case DataType::kInt64:
      return scaleLoop(static_cast<int64_t*>(data), count, [divisor](int64_t v) { return v / divisor; });
    case DataType::kInt32:
      return scaleLoop(static_cast<int32_t*>(data), count, [divisor](int32_t v) { return v / divisor; });
    case DataType::kUInt8:
      return scaleLoop(static_cast<uint8_t*>(data), count,
                       [divisor](uint8_t v) { return static_cast<uint8_t>(v / divisor); });
    case DataType::kFloat16: {
      const float d = static_cast<float>(divisor);
      return scaleLoop(static_cast<uint16_t*>(data), count,
                       [d](uint16_t v) { return floatToHalfInline(halfToFloatInline(v) / d); });
    }
    case DataType::kBFloat16: {
      const float d = static_cast<float>(divisor);
      return scaleLoop(static_cast<uint16_t*>(data), count,
                       [d](uint16_t v) { return floatToBFloat16Inline(bfloat16ToFloatInline(v) / d); });
    }
  }
  RT_THROW(Error, "divideInPlace: unknown dtype ", static_cast<int>(dtype));
}

}  // namespace ringtrain::comm::detail
