#include "ringtrain/train/model_state.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ringtrain/config/config.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::train {

std::map<std::string, at::Tensor> modelState(const model::SgnsModel& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model.named_parameters()) out[p.key()] = p.value().detach().to(at::kCPU).clone();
  return out;
}

void loadModelState(model::SgnsModel& model, const std::map<std::string, at::Tensor>& state) {
  at::NoGradGuard no_grad;
  size_t used = 0;
  for (auto& p : model.named_parameters()) {
    const auto it = state.find(p.key());
    if (it == state.end()) RT_THROW(DataError, "model state has no parameter '", p.key(), "'");
    if (it->second.sizes() != p.value().sizes()) {
      RT_THROW(DataError, "model parameter '", p.key(), "' has shape ", it->second.sizes(), " in the checkpoint, ",
               p.value().sizes(), " in the model");
    }
    p.value().copy_(it->second);
    ++used;
  }
  if (used != state.size()) {
    RT_THROW(DataError, "model state has ", state.size(), " parameters, the model ", used, " (", model.layoutDescription(), ")");
  }
}

std::unique_ptr<model::SgnsModel> modelFromCheckpoint(const Checkpoint& ckpt, const std::string& origin) {
  if (ckpt.vocab.empty()) RT_THROW(DataError, origin, ": checkpoint has no vocabulary");
  // The checkpoint may come from another ringtrain version: what this one cannot take is skipped, and said.
  std::vector<std::string> ignored;
  const config::JobConfig job = config::loadStored(ckpt.config_yaml, origin + " (stored configuration)", &ignored);
  if (!ignored.empty()) {
    ringtrain::warn("{}: stored settings this version lacks or refuses were ignored: {}", origin,
                    fmt::format("{}", fmt::join(ignored, "; ")));
  }
  auto model = std::make_unique<model::SgnsModel>(
      model::sgnsOptionsFromConfig(job.model, static_cast<int64_t>(ckpt.vocab.size())), 0);
  try {
    loadModelState(*model, ckpt.model);
  } catch (const DataError& e) {
    RT_THROW(DataError, origin, ": ", e.what());
  }
  return model;
}

}  // namespace ringtrain::train
