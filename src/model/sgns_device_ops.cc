#include "model/sgns_device_ops.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "model/sgns_device_kernels.h"
#include "ringtrain/core/error.h"

namespace ringtrain::model::detail {
namespace {

void checkOnDevice(const at::Tensor& t, const at::Device& device, const char* what) {
  RT_CHECK(t.device() == device, "sgns: ", what, " is on ", t.device().str(), ", the tables on ", device.str());
}

void checkIdsTensor(const at::Tensor& ids, const at::Device& device, const char* what) {
  checkOnDevice(ids, device, what);
  RT_CHECK(ids.scalar_type() == at::kLong && ids.is_contiguous(), "sgns: ", what, " ids must be contiguous int64");
}

// The kernels' view of a checked batch (see checkInputs).
SgnsLookup lookup(const at::Tensor& u_source, const at::Tensor& u_rows, const at::Tensor& out_w,
                  const at::Tensor& context, const at::Tensor& negatives) {
  SgnsLookup l;
  l.query.u = u_source.data_ptr<float>();
  l.query.u_row_count = u_source.size(0);
  if (u_rows.defined()) l.query.u_rows = u_rows.data_ptr<int64_t>();
  l.out = out_w.data_ptr<float>();
  l.out_row_count = out_w.size(0);
  l.candidates = {context.data_ptr<int64_t>(), negatives.data_ptr<int64_t>()};
  l.batch = context.numel();
  l.cands = static_cast<int>(negatives.size(1) + 1);
  l.dim = static_cast<int>(out_w.size(1));
  return l;
}

void checkInputs(const at::Tensor& u_source, const at::Tensor& u_rows, const at::Tensor& out_w,
                 const at::Tensor& context, const at::Tensor& negatives) {
  RT_CHECK(deviceKernelsApply(u_source, out_w), "sgns: the device kernels take contiguous float32 CUDA tables");
  const at::Device device = out_w.device();
  checkIdsTensor(context, device, "context");
  checkIdsTensor(negatives, device, "negative");
  const int64_t batch = context.numel();
  RT_CHECK(context.dim() == 1 && negatives.dim() == 2 && negatives.size(0) == batch && out_w.dim() == 2 &&
               u_source.dim() == 2 && u_source.size(1) == out_w.size(1),
           "sgns: shapes do not match (context ", context.sizes(), ", negatives ", negatives.sizes(), ", u ",
           u_source.sizes(), ", out ", out_w.sizes(), ")");
  if (u_rows.defined()) {
    checkIdsTensor(u_rows, device, "center");
    RT_CHECK(u_rows.numel() == batch, "sgns: ", u_rows.numel(), " centers for ", batch, " examples");
  } else {
    RT_CHECK(u_source.size(0) == batch, "sgns: ", u_source.size(0), " query rows for ", batch, " examples");
  }
}

void launchedOrThrow(const char* error, const char* kernel) {
  RT_CHECK(error == nullptr, "sgns: launching the ", kernel, " kernel failed: ", error);
}

}  // namespace

bool deviceKernelsApply(const at::Tensor& u_source, const at::Tensor& out_w) {
  for (const at::Tensor* t : {&u_source, &out_w}) {
    if (!t->is_cuda() || t->scalar_type() != at::kFloat || !t->is_contiguous()) return false;
  }
  return u_source.device() == out_w.device();
}

std::pair<at::Tensor, at::Tensor> sgnsDeviceScore(const at::Tensor& u_source, const at::Tensor& u_rows,
                                                  const at::Tensor& out_w, const at::Tensor& context,
                                                  const at::Tensor& negatives) {
  checkInputs(u_source, u_rows, out_w, context, negatives);
  const c10::cuda::CUDAGuard guard(out_w.device());
  const int64_t batch = context.numel(), cands = negatives.size(1) + 1;
  at::Tensor coef = at::empty({batch, cands}, out_w.options());
  at::Tensor loss_rows = at::empty({batch}, out_w.options());
  SgnsScoreArgs args;
  static_cast<SgnsLookup&>(args) = lookup(u_source, u_rows, out_w, context, negatives);
  args.coef = coef.data_ptr<float>();
  args.loss_rows = loss_rows.data_ptr<float>();
  launchedOrThrow(launchSgnsScore(args, c10::cuda::getCurrentCUDAStream().stream()), "score");
  return {loss_rows.sum(), coef};
}

SgnsDeviceGrads sgnsDeviceBackward(const at::Tensor& coef, const at::Tensor& u_source, const at::Tensor& u_rows,
                                   const at::Tensor& out_w, const at::Tensor& context, const at::Tensor& negatives,
                                   const at::Tensor& grad_output) {
  checkInputs(u_source, u_rows, out_w, context, negatives);
  RT_CHECK(grad_output.numel() == 1, "sgns: the loss's gradient must have one element");
  const c10::cuda::CUDAGuard guard(out_w.device());
  // On the device already in training (loss.backward()); a gradient given on the host costs one small copy.
  const at::Tensor scale = grad_output.to(out_w.options()).contiguous();
  const at::Tensor coef_c = coef.contiguous();
  const int64_t batch = context.numel(), cands = negatives.size(1) + 1, dim = out_w.size(1);
  SgnsDeviceGrads grads;
  grads.grad_u = at::empty({batch, dim}, out_w.options());
  grads.out_values = at::empty({batch * cands, dim}, out_w.options());
  grads.out_ids = at::empty({batch * cands}, context.options());
  SgnsBackwardArgs args;
  static_cast<SgnsLookup&>(args) = lookup(u_source, u_rows, out_w, context, negatives);
  args.coef = coef_c.data_ptr<float>();
  args.grad_output = scale.data_ptr<float>();
  args.grad_u = grads.grad_u.data_ptr<float>();
  args.values = grads.out_values.data_ptr<float>();
  args.out_ids = grads.out_ids.data_ptr<int64_t>();
  launchedOrThrow(launchSgnsBackward(args, c10::cuda::getCurrentCUDAStream().stream()), "backward");
  return grads;
}

void deviceRowsAxpy(at::Tensor& table, const at::Tensor& idx, const at::Tensor& rows, double alpha) {
  RT_CHECK(deviceKernelsApply(rows, table) && table.dim() >= 1, "rows axpy: contiguous float32 CUDA tensors");
  checkIdsTensor(idx, table.device(), "row");
  const int64_t n = idx.numel();
  const int64_t width = table.size(0) == 0 ? 0 : table.numel() / table.size(0);
  RT_CHECK_EQ(rows.numel(), n * width, "rows axpy: rows do not match the ids");
  const c10::cuda::CUDAGuard guard(table.device());
  RowsAxpyArgs args;
  args.table = table.data_ptr<float>();
  args.table_rows = table.size(0);
  args.dim = static_cast<int>(width);
  args.idx = idx.data_ptr<int64_t>();
  args.rows = rows.data_ptr<float>();
  args.n = n;
  args.alpha = static_cast<float>(alpha);
  launchedOrThrow(launchRowsAxpy(args, c10::cuda::getCurrentCUDAStream().stream()), "rows axpy");
  // An in-place change, as index_add_ would record it: autograd can then tell a saved tensor was modified.
  table.unsafeGetTensorImpl()->bump_version();
}

}  // namespace ringtrain::model::detail
