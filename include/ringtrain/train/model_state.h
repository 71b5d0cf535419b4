// Moving an SgnsModel's parameters in and out of checkpoints, and rebuilding a model from one.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "ringtrain/model/sgns_model.h"
#include "ringtrain/train/checkpoint.h"

namespace ringtrain::train {

// Parameter name -> CPU copy.
std::map<std::string, at::Tensor> modelState(const model::SgnsModel& model);
// Copies into the model's parameters (on their device); DataError naming the first missing or
// mis-shaped parameter.
void loadModelState(model::SgnsModel& model, const std::map<std::string, at::Tensor>& state);
// A CPU model built from the checkpoint's own configuration (config_yaml) and vocabulary, with its weights.
std::unique_ptr<model::SgnsModel> modelFromCheckpoint(const Checkpoint& ckpt, const std::string& origin);

}  // namespace ringtrain::train
