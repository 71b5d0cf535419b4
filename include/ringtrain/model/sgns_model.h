// Skip-gram with negative sampling (SGNS) over item ids, the model behind product embeddings.
//
//   u    = tower(in[center])            (tower: dim -> tower_hidden -> ReLU -> dim, or the identity)
//   s_j  = <u, out[c_j]>                c_0 = the context item, c_1..c_K = the negatives
//   loss = mean over the batch of ( -log sigmoid(s_0) - sum_k log sigmoid(-s_k) )
//
// Parameters (registered on the torch::nn::Module under these names, in this order):
//   input_embedding [V, D], output_embedding [V, D], and with a tower
//   tower_w1 [H, D], tower_b1 [H], tower_w2 [D, H], tower_b2 [D].
// The two embedding tables get sparse COO gradients (indices [1, n], values [n, D], not coalesced:
// one row per lookup) when options.sparse, dense ones otherwise; the tower's are always dense.
//
// forward() is one autograd node whose backward is written out by hand (gather, scores, tower, and the
// row gradients directly), so loss.backward() fills param.grad() as usual and gradient-accumulator hooks
// (DDP) still fire, without the dozens of small autograd nodes an eager composition builds. On CPU with
// float32 it runs fused loops and a small AVX2 GEMM; on CUDA with float32 two hand-written kernels (scores
// and loss; row gradients) where the build has them (LibTorch with CUDA and nvcc); elsewhere the same math
// in ATen ops.
//
// Initialisation (word2vec): input uniform(-s, s) with s = init_scale or 0.5 / dim, output zeros; tower
// weights and biases uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) like torch.nn.Linear. With zero output
// vectors the first step still moves them (d loss / d out = sigmoid terms * u, and u != 0), and the input
// side gets gradients from the second step on. Deterministic from the seed (own generator, not the global one).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "ringtrain/config/config.h"

namespace ringtrain::model {

struct SgnsOptions {
  int64_t vocab_size = 0;
  int dim = 64;
  int tower_hidden = 0;     // 0: no tower
  bool sparse = true;       // sparse gradients for the embedding tables
  double init_scale = 0.0;  // 0: 0.5 / dim
  // Output table init: word2vec uses zeros; the PyTorch peer (ddp_peer.py) uses uniform(-s, s) too.
  bool zero_output_init = true;
  // On CUDA: ringtrain's own kernels for the scores and the row gradients (when built); false: the ATen
  // formulation, kept as the reference the GPU tests and the GPU benchmark compare the kernels with. (Row
  // scatter-adds, detail::indexAddRows, use ringtrain's kernel on CUDA either way: the optimizer's update and
  // dense table gradients; tests/model/sgns_device_gputest.cc holds it to index_add_.)
  bool device_kernels = true;
  // The embedding tables on transparent huge pages (src/model/table_memory.h; run.huge_pages). CPU only:
  // to(device) copies them elsewhere.
  bool huge_pages = false;
};
SgnsOptions sgnsOptionsFromConfig(const config::ModelOptions& model, int64_t vocab_size);

class SgnsModel : public torch::nn::Module {
 public:
  // Parameters are created on CPU (float32) from `seed`; call to(device) afterwards.
  SgnsModel(const SgnsOptions& options, uint64_t seed);

  // center [B], context [B], negatives [B, K]: int64 item ids on the parameters' device.
  // Returns the scalar loss (requires grad).
  at::Tensor forward(const at::Tensor& center, const at::Tensor& context, const at::Tensor& negatives);

  // The same loss through plain ATen/autograd ops (embedding, linear, bmm, logsigmoid): the reference the
  // tests hold forward() to, and a readable statement of the model.
  at::Tensor forwardReference(const at::Tensor& center, const at::Tensor& context,
                              const at::Tensor& negatives);

  // Vectors for evaluation and export, computed without gradients, [V, D] float32 on the model's device:
  // queryVectors = tower(in) (what a center item is scored with), itemVectors = the exported item vectors.
  // See ringtrain/train/evaluation.h for which pair ranks best.
  at::Tensor queryVectors() const;
  at::Tensor outputVectors() const;

  const SgnsOptions& options() const { return options_; }
  bool hasTower() const { return options_.tower_hidden > 0; }
  at::Tensor& inputEmbedding() { return input_embedding_; }
  at::Tensor& outputEmbedding() { return output_embedding_; }
  // Gradient accumulation over several backward passes of one step (micro-batches, ddp.steal's chunks) without
  // autograd's sparse additions, each of which copies every row so far: while held, backward keeps the tables'
  // sparse gradients (their .grad() is left as it is: the passes add nothing to it), and the first backward
  // after release hands them over with its own as one tensor per table, their rows in pass order. Hold the
  // passes DDP's noSync() covers and release for the synchronized one: a held pass gives the tables no
  // gradient for DDP to see. Only options.sparse gradients are held.
  void holdSparseGradients(bool hold);
  // Whether rows are kept that no backward has handed over yet.
  bool holdsSparseGradients() const;
  // Stops holding and forgets the rows kept (after a pass that threw, say).
  void dropHeldSparseGradients();
  // Names of the parameters whose gradients are sparse (empty when !options.sparse).
  std::vector<std::string> sparseParameterNames() const;
  // "vocab=V dim=D tower=H sparse=1": compared across ranks at start.
  std::string layoutDescription() const;

 private:
  SgnsOptions options_;
  at::Tensor input_embedding_;
  at::Tensor output_embedding_;
  at::Tensor tower_w1_, tower_b1_, tower_w2_, tower_b2_;  // undefined without a tower
  c10::intrusive_ptr<torch::CustomClassHolder> stash_;     // the sparse rows held (SparseGradientStash)
};

}  // namespace ringtrain::model
