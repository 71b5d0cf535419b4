#include "model/row_ops.h"

#include <ATen/ATen.h>

#include "ringtrain/core/error.h"

namespace ringtrain::model::detail {

void indexAddRows(at::Tensor& table, const at::Tensor& idx, const at::Tensor& rows, double alpha) {
  const bool fast = table.is_cpu() && table.scalar_type() == at::kFloat && rows.scalar_type() == at::kFloat &&
                    table.is_contiguous() && table.dim() >= 1 && idx.scalar_type() == at::kLong && rows.is_cpu();
  if (!fast) {
    table.index_add_(0, idx, rows, alpha);
    return;
  }
  const at::Tensor src = rows.contiguous();
  const at::Tensor index = idx.contiguous();
  const int64_t n = index.numel();
  const int64_t width = table.dim() == 1 ? 1 : table.numel() / table.size(0);
  RT_CHECK_EQ(src.numel(), n * width, "indexAddRows: rows do not match the index");
  const int64_t limit = table.size(0);
  const int64_t* pi = index.data_ptr<int64_t>();
  const float* ps = src.data_ptr<float>();
  float* pt = table.data_ptr<float>();
  const auto a = static_cast<float>(alpha);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = pi[i];
    RT_CHECK(r >= 0 && r < limit, "indexAddRows: row ", r, " outside [0, ", limit, ")");
    float* dst = pt + r * width;
    const float* s = ps + i * width;
    for (int64_t d = 0; d < width; ++d) dst[d] += a * s[d];
  }
}

}  // namespace ringtrain::model::detail
