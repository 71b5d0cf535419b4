#include "model/row_ops.h"

#include <ATen/ATen.h>

#include "core/prefetch.h"
#include "ringtrain/build_config.h"
#include "ringtrain/core/error.h"
#if RINGTRAIN_HAVE_CUDA_KERNELS
#include "model/sgns_device_ops.h"
#endif

namespace ringtrain::model::detail {

void indexAddRows(at::Tensor& table, const at::Tensor& idx, const at::Tensor& rows, double alpha) {
#if RINGTRAIN_HAVE_CUDA_KERNELS
  // On a GPU, ringtrain's kernel: one launch, without index_add_'s checks and set-up on the host.
  if (idx.scalar_type() == at::kLong && idx.device() == table.device() && deviceKernelsApply(rows, table)) {
    deviceRowsAxpy(table, idx.contiguous(), rows, alpha);
    return;
  }
#endif
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
    if (i + ::ringtrain::detail::kRowsAhead < n) {
      const int64_t ahead = pi[i + ::ringtrain::detail::kRowsAhead];
      if (ahead >= 0 && ahead < limit) ::ringtrain::detail::prefetchRow<true>(pt, ahead, width);
    }
    const int64_t r = pi[i];
    RT_CHECK(r >= 0 && r < limit, "indexAddRows: row ", r, " outside [0, ", limit, ")");
    float* dst = pt + r * width;
    const float* s = ps + i * width;
    for (int64_t d = 0; d < width; ++d) dst[d] += a * s[d];
  }
}

}  // namespace ringtrain::model::detail

#include <algorithm>
#include <numeric>
#include <vector>

namespace ringtrain::model::detail {

at::Tensor coalesceRows(const at::Tensor& grad) {
  if (!grad.is_cpu() || grad.scalar_type() != at::kFloat || grad.sparse_dim() != 1) return grad.coalesce();
  const at::Tensor idx = grad._indices()[0].contiguous();
  const at::Tensor values = grad._values().contiguous();
  const int64_t n = idx.numel();
  const int64_t width = n == 0 ? 0 : values.numel() / n;
  const int64_t* pi = idx.data_ptr<int64_t>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [pi](int64_t a, int64_t b) { return pi[a] < pi[b]; });
  int64_t unique = 0;
  for (int64_t i = 0; i < n; ++i) unique += (i == 0 || pi[order[i]] != pi[order[i - 1]]);
  at::Tensor out_idx = at::empty({1, unique}, idx.options());
  std::vector<int64_t> value_shape = values.sizes().vec();
  value_shape[0] = unique;
  at::Tensor out_values = at::zeros(value_shape, values.options());
  int64_t* po = out_idx.data_ptr<int64_t>();
  float* pv = out_values.data_ptr<float>();
  const float* ps = values.data_ptr<float>();
  int64_t u = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t src = order[static_cast<size_t>(i)];
    if (i == 0 || pi[src] != pi[order[static_cast<size_t>(i - 1)]]) po[++u] = pi[src];
    float* dst = pv + u * width;
    const float* s = ps + src * width;
    for (int64_t d = 0; d < width; ++d) dst[d] += s[d];
  }
  at::Tensor out = at::_sparse_coo_tensor_unsafe(out_idx, out_values, grad.sizes(), grad.options());
  out._coalesced_(true);
  return out;
}

}  // namespace ringtrain::model::detail
