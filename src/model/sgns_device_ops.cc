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

SgnsQueryRows queryRows(const at::Tensor& u_source, const at::Tensor& u_rows) {
  SgnsQueryRows q;
  q.u = u_source.data_ptr<float>();
  q.u_row_count = u_source.size(0);
  if (u_rows.defined()) q.u_rows = u_rows.data_ptr<int64_t>();
  return q;
}

void checkInputs(const at::Tensor& u_source, const at::Tensor& u_rows, const at::Tensor& out_w,
                 const at::Tensor& ids) {
  RT_CHECK(deviceKernelsApply(u_source, out_w), "sgns: the device kernels take contiguous float32 CUDA tables");
  const at::Device device = out_w.device();
  checkIdsTensor(ids, device, "context/negative");
  RT_CHECK(ids.dim() == 2 && out_w.dim() == 2 && u_source.dim() == 2 && u_source.size(1) == out_w.size(1),
           "sgns: shapes do not match (ids ", ids.sizes(), ", u ", u_source.sizes(), ", out ", out_w.sizes(), ")");
  if (u_rows.defined()) {
    checkIdsTensor(u_rows, device, "center");
    RT_CHECK(u_rows.numel() == ids.size(0), "sgns: ", u_rows.numel(), " centers for ", ids.size(0), " examples");
  } else {
    RT_CHECK(u_source.size(0) == ids.size(0), "sgns: ", u_source.size(0), " query rows for ", ids.size(0),
             " examples");
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
                                                  const at::Tensor& out_w, const at::Tensor& ids) {
  checkInputs(u_source, u_rows, out_w, ids);
  const c10::cuda::CUDAGuard guard(out_w.device());
  const int64_t batch = ids.size(0);
  at::Tensor coef = at::empty({batch, ids.size(1)}, out_w.options());
  at::Tensor loss_rows = at::empty({batch}, out_w.options());
  SgnsScoreArgs args;
  args.query = queryRows(u_source, u_rows);
  args.out = out_w.data_ptr<float>();
  args.out_row_count = out_w.size(0);
  args.ids = ids.data_ptr<int64_t>();
  args.batch = batch;
  args.cands = static_cast<int>(ids.size(1));
  args.dim = static_cast<int>(out_w.size(1));
  args.coef = coef.data_ptr<float>();
  args.loss_rows = loss_rows.data_ptr<float>();
  launchedOrThrow(launchSgnsScore(args, c10::cuda::getCurrentCUDAStream().stream()), "score");
  return {loss_rows.sum(), coef};
}

std::pair<at::Tensor, at::Tensor> sgnsDeviceBackward(const at::Tensor& coef, const at::Tensor& u_source,
                                                     const at::Tensor& u_rows, const at::Tensor& out_w,
                                                     const at::Tensor& ids, const at::Tensor& grad_output) {
  checkInputs(u_source, u_rows, out_w, ids);
  RT_CHECK(grad_output.numel() == 1, "sgns: the loss's gradient must have one element");
  const c10::cuda::CUDAGuard guard(out_w.device());
  // On the device already in training (loss.backward()); a gradient given on the host costs one small copy.
  const at::Tensor scale = grad_output.to(out_w.options()).contiguous();
  const at::Tensor coef_c = coef.contiguous();
  const int64_t batch = ids.size(0), cands = ids.size(1), dim = out_w.size(1);
  at::Tensor grad_u = at::empty({batch, dim}, out_w.options());
  at::Tensor values = at::empty({batch * cands, dim}, out_w.options());
  SgnsBackwardArgs args;
  args.query = queryRows(u_source, u_rows);
  args.out = out_w.data_ptr<float>();
  args.out_row_count = out_w.size(0);
  args.ids = ids.data_ptr<int64_t>();
  args.batch = batch;
  args.cands = static_cast<int>(cands);
  args.dim = static_cast<int>(dim);
  args.coef = coef_c.data_ptr<float>();
  args.grad_output = scale.data_ptr<float>();
  args.grad_u = grad_u.data_ptr<float>();
  args.values = values.data_ptr<float>();
  launchedOrThrow(launchSgnsBackward(args, c10::cuda::getCurrentCUDAStream().stream()), "backward");
  return {grad_u, values};
}

}  // namespace ringtrain::model::detail
