#include "ddp/table_rows.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace ringtrain::ddp::detail {

int64_t rowWidth(const at::Tensor& param) { return param.numel() / std::max<int64_t>(param.size(0), 1); }

TableRows tableRows(const at::Tensor& param, const at::Tensor& grad, const at::Device& device, bool coalesce) {
  const int64_t width = rowWidth(param);
  const auto ids_on_device = at::TensorOptions().dtype(at::kLong).device(device);
  const auto values_on_device = param.options().device(device);
  if (!grad.defined()) return {at::empty({0}, ids_on_device), at::empty({0, width}, values_on_device)};
  if (!grad.is_sparse()) {
    return {at::arange(param.size(0), ids_on_device),
            grad.to(device, param.scalar_type()).contiguous().reshape({param.size(0), width})};
  }
  at::Tensor g = grad;
  if (coalesce || !g.is_cpu()) g = g.coalesce();
  at::Tensor ids = g._indices().select(0, 0).to(device).contiguous();
  return {ids, g._values().to(device, param.scalar_type()).contiguous().reshape({ids.numel(), width})};
}

}  // namespace ringtrain::ddp::detail
