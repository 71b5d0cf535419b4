#include "testing/ring_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"

namespace ringtrain::testing {

using comm::DataType;
using comm::ReduceOp;

double ringValue(int rank, size_t i) { return static_cast<double>(static_cast<int>((i * 7 + rank * 3) % 16) - 5); }

void storeValue(void* data, size_t i, DataType type, double v) {
  switch (type) {
    case DataType::kFloat32: static_cast<float*>(data)[i] = static_cast<float>(v); return;
    case DataType::kFloat64: static_cast<double*>(data)[i] = v; return;
    case DataType::kFloat16: static_cast<uint16_t*>(data)[i] = comm::floatToHalf(static_cast<float>(v)); return;
    case DataType::kBFloat16: static_cast<uint16_t*>(data)[i] = comm::floatToBFloat16(static_cast<float>(v)); return;
    case DataType::kInt64: static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v); return;
    default: RT_THROW(Error, "ring_check: unsupported dtype ", comm::toString(type));
  }
}

double loadValue(const void* data, size_t i, DataType type) {
  switch (type) {
    case DataType::kFloat32: return static_cast<const float*>(data)[i];
    case DataType::kFloat64: return static_cast<const double*>(data)[i];
    case DataType::kFloat16: return comm::halfToFloat(static_cast<const uint16_t*>(data)[i]);
    case DataType::kBFloat16: return comm::bfloat16ToFloat(static_cast<const uint16_t*>(data)[i]);
    case DataType::kInt64: return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    default: return NAN;
  }
}

double expectedValue(size_t i, int ranks, DataType type, ReduceOp op) {
  double sum = 0, mx = -1e9, mn = 1e9;
  for (int r = 0; r < ranks; ++r) {
    sum += ringValue(r, i);
    mx = std::max(mx, ringValue(r, i));
    mn = std::min(mn, ringValue(r, i));
  }
  switch (op) {
    case ReduceOp::kSum: return sum;
    case ReduceOp::kMax: return mx;
    case ReduceOp::kMin: return mn;
    case ReduceOp::kAverage: break;
  }
  switch (type) {
    case DataType::kFloat32: return static_cast<float>(sum) / static_cast<float>(ranks);
    case DataType::kFloat64: return sum / ranks;
    case DataType::kFloat16: return comm::halfToFloat(comm::floatToHalf(static_cast<float>(sum) / ranks));
    case DataType::kBFloat16: return comm::bfloat16ToFloat(comm::floatToBFloat16(static_cast<float>(sum) / ranks));
    default: return static_cast<double>(static_cast<int64_t>(sum) / ranks);
  }
}

const std::vector<DataType>& ringTypes() {
  static const std::vector<DataType> types = {DataType::kFloat32, DataType::kFloat64, DataType::kFloat16,
                                              DataType::kBFloat16, DataType::kInt64};
  return types;
}
const std::vector<ReduceOp>& ringOps() {
  static const std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin};
  return ops;
}
const std::vector<size_t>& ringCounts() {
  static const std::vector<size_t> counts = {0, 1, 2, 3, 5, 7, 13, 64, 1000, 4097, 20011, 100003};
  return counts;
}

void checkRingCases(comm::Communicator& comm, const std::function<void(comm::Buffer, ReduceOp)>& allreduce,
                    size_t max_count) {
  std::vector<uint8_t> bytes;
  for (DataType type : ringTypes()) {
    for (ReduceOp op : ringOps()) {
      for (size_t n : ringCounts()) {
        if (n > max_count) continue;
        bytes.assign(n * comm::elementSize(type) + 1, 0);
        for (size_t i = 0; i < n; ++i) storeValue(bytes.data(), i, type, ringValue(comm.rank(), i));
        allreduce(comm::Buffer{bytes.data(), n, type}, op);
        for (size_t i = 0; i < n; ++i) {
          const double want = expectedValue(i, comm.size(), type, op);
          const double got = loadValue(bytes.data(), i, type);
          if (got != want) {
            RT_THROW(Error, "rank ", comm.rank(), " of ", comm.size(), ": ", comm::toString(type), " ",
                     comm::toString(op), " of ", n, " elements: element ", i, " is ", got, ", expected ", want);
          }
        }
      }
    }
  }
}

}  // namespace ringtrain::testing
