// DDP against one process: ranks are threads over an in-process communicator (tests/ddp/thread_group.h).
// Intra-op threads are per process in LibTorch, so the suite pins them to 1 once; each rank thread runs
// its own forward/backward (CPU autograd runs backward on the calling thread).
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "ddp/sparse_sync_device.h"
#include "ddp/thread_group.h"
#include "ringtrain/build_config.h"
#include "ringtrain/core/error.h"
#include "ringtrain/ddp/comm_hook.h"
#include "ringtrain/ddp/distributed_data_parallel.h"
#include "ringtrain/ddp/sparse_sync.h"
#include "ringtrain/ddp/tensor_buffer.h"
#include "testing/captured_log.h"
#include "testing/proc_files.h"
#include "testing/rank_threads.h"

namespace ringtrain::ddp {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

constexpr auto kTimeout = std::chrono::seconds(20);

// How ranks talk: Gloo over a MemoryStore (native or ring allreduce) when the build has Gloo, else the
// in-process thread communicator.
enum class Wire { kNative, kRing };

void runDdpRanks(int world, Wire wire, const std::function<void(comm::Communicator&)>& body) {
#if RINGTRAIN_WITH_GLOO
  auto options = testing::testCommOptions(20.0);
  options.backend = "gloo";
  options.allreduce_algorithm = wire == Wire::kRing ? "ring" : "native";
  testing::expectAllOk(testing::runWithCommunicators(world, options, body));
#else
  (void)wire;
  testing::ThreadGroup group(world);
  testing::runRanks(world, [&](int rank) {
    testing::ThreadCommunicator comm(group, rank, kTimeout);
    body(comm);
  });
#endif
}
void runDdpRanks(int world, const std::function<void(comm::Communicator&)>& body) {
  runDdpRanks(world, Wire::kNative, body);
}

struct MlpImpl : torch::nn::Module {
  MlpImpl(int hidden = 16, bool with_unused = false) {
    fc1 = register_module("fc1", torch::nn::Linear(8, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 4));
    if (with_unused) unused = register_module("unused", torch::nn::Linear(4, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, unused{nullptr};
};

struct EmbedImpl : torch::nn::Module {
  EmbedImpl() {
    emb = register_module("emb", torch::nn::Embedding(torch::nn::EmbeddingOptions(50, 6).sparse(true)));
    head = register_module("head", torch::nn::Linear(6, 1));
  }
  torch::Tensor forward(const torch::Tensor& ids) { return head(emb(ids)).squeeze(-1); }
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear head{nullptr};
};

// An MlpImpl(64) in at least three buckets (fc2.bias | fc2.weight | fc1.bias + fc1.weight), never rebuilt.
DdpOptions smallBuckets() {
  DdpOptions options;
  options.bucket_cap_mb = 0.0005;
  options.first_bucket_mb = 0.00001;
  options.rebuild_buckets = false;
  return options;
}

void copyParams(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto a = from.parameters();
  auto b = to.parameters();
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

void expectSameParams(torch::nn::Module& expected, torch::nn::Module& actual, double rtol, const std::string& what,
                      double atol = 1e-6) {
  auto e = expected.named_parameters();
  auto a = actual.named_parameters();
  ASSERT_EQ(e.size(), a.size());
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_TRUE(torch::allclose(e[i].value(), a[i].value(), rtol, atol))
        << what << ": parameter " << e[i].key() << " max diff "
        << (e[i].value() - a[i].value()).abs().max().item<double>();
  }
}

class DdpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { at::set_num_threads(1); }
};

// Global batch for step s: world * per_rank rows; rank r trains on its slice.
// Two heads; the second used only when asked (a parameter unused on some ranks).
struct TwoHeadImpl : torch::nn::Module {
  TwoHeadImpl() {
    a = register_module("a", torch::nn::Linear(8, 8));
    b = register_module("b", torch::nn::Linear(8, 8));
  }
  torch::Tensor forward(const torch::Tensor& x, bool use_b) { return torch::tanh(use_b ? a(x) + b(x) : a(x)); }
  torch::nn::Linear a{nullptr}, b{nullptr};
};

torch::Tensor inputs(int step, int64_t rows) {
  return torch::sin(torch::arange(rows * 8, torch::kFloat).reshape({rows, 8}) * 0.37 + step * 1.3);
}
torch::Tensor targets(int step, int64_t rows) {
  return torch::cos(torch::arange(rows * 4, torch::kFloat).reshape({rows, 4}) * 0.11 + step * 0.7);
}

// Trains `steps` SGD steps of DDP on `world` threads and of one process on the concatenated batches.
void denseEquivalence(int world, Wire wire, const std::string& compression, double rtol,
                      double atol = 1e-6) {
  const int steps = 20;
  const int64_t per_rank = 5;
  torch::manual_seed(1);
  auto reference = std::make_shared<MlpImpl>();
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(100 + r);  // different on purpose: construction must broadcast rank 0's
    models.push_back(std::make_shared<MlpImpl>());
  }
  copyParams(*reference, *models[0]);

  runDdpRanks(world, wire, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DdpOptions options;
    options.bucket_cap_mb = 0.0005;  // several buckets
    options.first_bucket_mb = 0.0002;
    options.compression = compression;
    options.replica_check_every = 5;
    DistributedDataParallel ddp(*models[rank], comm, options);
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.1));
    for (int s = 0; s < steps; ++s) {
      auto x = inputs(s, per_rank * world).narrow(0, rank * per_rank, per_rank);
      auto y = targets(s, per_rank * world).narrow(0, rank * per_rank, per_rank);
      sgd.zero_grad();
      torch::mse_loss(models[rank]->forward(x), y).backward();
      ddp.finalize();
      sgd.step();
    }
    EXPECT_GT(ddp.stats().buckets.size(), 1u);
    EXPECT_EQ(ddp.stats().steps, steps);
  });

  torch::optim::SGD sgd(reference->parameters(), torch::optim::SGDOptions(0.1));
  for (int s = 0; s < steps; ++s) {
    sgd.zero_grad();
    torch::mse_loss(reference->forward(inputs(s, per_rank * world)), targets(s, per_rank * world)).backward();
    sgd.step();
  }
  for (int r = 0; r < world; ++r) {
    expectSameParams(*reference, *models[r], rtol, "rank " + std::to_string(r), atol);
  }
  // Replicas are bitwise identical.
  for (int r = 1; r < world; ++r) {
    auto a = models[0]->parameters();
    auto b = models[r]->parameters();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
  }
}

TEST_F(DdpTest, DenseMatchesOneProcessOn1Rank) { denseEquivalence(1, Wire::kNative, "none", 1e-5); }
TEST_F(DdpTest, DenseMatchesOneProcessOn2RanksNative) { denseEquivalence(2, Wire::kNative, "none", 1e-5); }
TEST_F(DdpTest, DenseMatchesOneProcessOn3RanksNative) { denseEquivalence(3, Wire::kNative, "none", 1e-5); }
TEST_F(DdpTest, DenseMatchesOneProcessOn2RanksRing) { denseEquivalence(2, Wire::kRing, "none", 1e-5); }
TEST_F(DdpTest, DenseMatchesOneProcessOn3RanksRing) { denseEquivalence(3, Wire::kRing, "none", 1e-5); }
TEST_F(DdpTest, Fp16CompressionStaysClose) { denseEquivalence(2, Wire::kNative, "fp16", 1e-3, 1e-4); }
TEST_F(DdpTest, Bf16CompressionStaysClose) { denseEquivalence(3, Wire::kNative, "bf16", 1e-2, 1e-3); }

void sparseEquivalence(int world, Wire wire, SparseSync mode) {
  const int steps = 20;
  const int64_t per_rank = 12;
  torch::manual_seed(2);
  auto reference = std::make_shared<EmbedImpl>();
  std::vector<std::shared_ptr<EmbedImpl>> models;
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(200 + r);
    models.push_back(std::make_shared<EmbedImpl>());
  }
  copyParams(*reference, *models[0]);
  // Skewed ids (hot rows repeat within and across ranks); row 49 is never touched.
  auto ids = [&](int s) {
    auto base = torch::arange(per_rank * world, torch::kLong);
    return ((base * base + s * 7) % 37 + (base % 3) * 4) % 49;
  };
  auto target = [&](int s) { return torch::sin(torch::arange(per_rank * world, torch::kFloat) + s); };

  std::vector<DdpStats> stats(world);
  runDdpRanks(world, wire, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DdpOptions options;
    options.sparse_sync = mode;
    DistributedDataParallel ddp(*models[rank], comm, options);
    // Shared tables need every rank on one host, which threads are; over Gloo the test insists that the
    // communicator sees it (else shared would quietly be allgather again).
    const bool shared = mode == SparseSync::kShared && comm.canReadPeerMemory();
    EXPECT_EQ(ddp.sharesSparseParameters(), shared);
#if RINGTRAIN_WITH_GLOO
    if (mode == SparseSync::kShared) EXPECT_TRUE(shared) << "same-host memory refused: nothing shared was tested";
#endif
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.5));
    for (int s = 0; s < steps; ++s) {
      auto x = ids(s).narrow(0, rank * per_rank, per_rank);
      auto y = target(s).narrow(0, rank * per_rank, per_rank);
      if (shared) {
        ddp.zeroGrad();  // collective: every owner's rows are written before this forward reads them
      } else {
        sgd.zero_grad();
      }
      torch::mse_loss(models[rank]->forward(x), y).backward();
      ddp.finalize();
      auto grad = models[rank]->emb->weight.grad();
      EXPECT_TRUE(grad.is_sparse());
      EXPECT_TRUE(grad.is_coalesced());
      sgd.step();
    }
    stats[rank] = ddp.stats();
  });

  torch::optim::SGD sgd(reference->parameters(), torch::optim::SGDOptions(0.5));
  for (int s = 0; s < steps; ++s) {
    sgd.zero_grad();
    torch::mse_loss(reference->forward(ids(s)), target(s)).backward();
    sgd.step();
  }
  for (int r = 0; r < world; ++r) expectSameParams(*reference, *models[r], 1e-5, "rank " + std::to_string(r));
  EXPECT_EQ(stats[0].sparse_parameters, 1u);
  EXPECT_GT(stats[0].sparse_bytes_sent, 0u);
  EXPECT_GT(stats[0].sparse_rows_global, 0u);
  for (int r = 0; r < world; ++r) {
    // The exchange is timed inside the sync: part of it, never more.
    EXPECT_GT(stats[r].sum_sparse_exchange_time.count(), 0) << "rank " << r;
    EXPECT_LE(stats[r].sum_sparse_exchange_time, stats[r].sum_sparse_sync_time) << "rank " << r;
  }
}

TEST_F(DdpTest, SparseOwnerMatchesOneProcessOn2RanksNative) { sparseEquivalence(2, Wire::kNative, SparseSync::kOwner); }
TEST_F(DdpTest, SparseOwnerMatchesOneProcessOn2RanksRing) { sparseEquivalence(2, Wire::kRing, SparseSync::kOwner); }
TEST_F(DdpTest, SparseAllgatherMatchesOneProcessOn2RanksNative) { sparseEquivalence(2, Wire::kNative, SparseSync::kAllgather); }
TEST_F(DdpTest, SparseAllgatherMatchesOneProcessOn2RanksRing) { sparseEquivalence(2, Wire::kRing, SparseSync::kAllgather); }
TEST_F(DdpTest, SparseOwnerMatchesOneProcessOn3RanksNative) { sparseEquivalence(3, Wire::kNative, SparseSync::kOwner); }
TEST_F(DdpTest, SparseOwnerMatchesOneProcessOn3RanksRing) { sparseEquivalence(3, Wire::kRing, SparseSync::kOwner); }
TEST_F(DdpTest, SparseAllgatherMatchesOneProcessOn3RanksNative) { sparseEquivalence(3, Wire::kNative, SparseSync::kAllgather); }
TEST_F(DdpTest, SparseAllgatherMatchesOneProcessOn3RanksRing) { sparseEquivalence(3, Wire::kRing, SparseSync::kAllgather); }
TEST_F(DdpTest, SparseSharedMatchesOneProcessOn2RanksNative) { sparseEquivalence(2, Wire::kNative, SparseSync::kShared); }
TEST_F(DdpTest, SparseSharedMatchesOneProcessOn3RanksRing) { sparseEquivalence(3, Wire::kRing, SparseSync::kShared); }

// Trains EmbedImpl for `steps` SGD steps on `world` ranks with `mode`; returns rank 0's parameters.
std::vector<torch::Tensor> trainEmbedding(int world, SparseSync mode, int steps) {
  torch::manual_seed(3);
  std::vector<std::shared_ptr<EmbedImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<EmbedImpl>());
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DdpOptions options;
    options.sparse_sync = mode;
    DistributedDataParallel ddp(*models[rank], comm, options);
#if RINGTRAIN_WITH_GLOO
    EXPECT_EQ(ddp.sharesSparseParameters(), mode == SparseSync::kShared) << "shared must really be shared here";
#endif
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.5));
    for (int s = 0; s < steps; ++s) {
      const auto ids = (torch::arange(10, torch::kLong) * (rank + 2) + s * 3) % 47;
      ddp.zeroGrad();
      torch::mse_loss(models[rank]->forward(ids), torch::cos(ids.to(torch::kFloat))).backward();
      ddp.finalize();
      sgd.step();
    }
  });
  std::vector<torch::Tensor> params;
  for (const auto& p : models[0]->parameters()) params.push_back(p.detach().clone());
  return params;
}

// Shared tables do the arithmetic of allgather (each owner sums the same rows in the same rank order), so
// both end with the same parameters, bit for bit.
TEST_F(DdpTest, SparseSharedEqualsAllgatherBitForBit) {
#if !RINGTRAIN_WITH_GLOO
  GTEST_SKIP() << "the thread communicator cannot share a host's memory";
#endif
  const auto gathered = trainEmbedding(3, SparseSync::kAllgather, 15);
  const auto shared = trainEmbedding(3, SparseSync::kShared, 15);
  ASSERT_EQ(gathered.size(), shared.size());
  for (size_t i = 0; i < gathered.size(); ++i) EXPECT_TRUE(torch::equal(gathered[i], shared[i])) << "parameter " << i;
}

// A sparse table of 5 MiB (3 huge pages), over the smallest one asked of the host's huge-page pool.
struct BigEmbedImpl : torch::nn::Module {
  BigEmbedImpl() {
    emb = register_module("emb", torch::nn::Embedding(torch::nn::EmbeddingOptions(20480, 64).sparse(true)));
  }
  torch::Tensor forward(const torch::Tensor& ids) { return emb(ids).sum(-1); }
  torch::nn::Embedding emb{nullptr};
};

// The pool (sysctl vm.nr_hugepages) is empty on CI machines: there rank 0 says how to fill it, with the pages
// the tables need; where it holds them (filled by hand), it says the tables are on them. Training goes on
// either way.
TEST_F(DdpTest, SharedTablesTakeHugePagesFromThePoolOrRankZeroSaysHowToFillIt) {
#if !RINGTRAIN_WITH_GLOO
  GTEST_SKIP() << "the thread communicator cannot share a host's memory";
#endif
  testing::CapturedLog log;
  const bool pool_holds_them = testing::freeTwoMegabytePoolPages() >= 3;
  std::vector<std::shared_ptr<BigEmbedImpl>> models;
  for (int r = 0; r < 2; ++r) models.push_back(std::make_shared<BigEmbedImpl>());
  std::vector<std::string> reports(2);
  runDdpRanks(2, [&](comm::Communicator& comm) {
    DdpOptions options;
    options.sparse_sync = SparseSync::kShared;
    options.huge_pages = true;
    DistributedDataParallel ddp(*models[comm.rank()], comm, options);
    ASSERT_TRUE(ddp.sharesSparseParameters());
    torch::optim::SGD sgd(models[comm.rank()]->parameters(), torch::optim::SGDOptions(0.5));
    ddp.zeroGrad();
    models[comm.rank()]->forward(torch::arange(8, torch::kLong) * (comm.rank() + 1)).sum().backward();
    ddp.finalize();
    sgd.step();
    ddp.zeroGrad();
    // State shared beside the table (an optimizer's sums) counts in a second report, once it is placed.
    EXPECT_EQ(ddp.sharedMemoryPagesReport(), "") << "nothing shared beside the tables yet";
    ddp.shareOnHost(torch::zeros_like(models[comm.rank()]->emb->weight), "emb.sum");
    reports[comm.rank()] = ddp.sharedMemoryPagesReport();
  });
  EXPECT_TRUE(torch::equal(models[0]->emb->weight, models[1]->emb->weight)) << "one table, seen by both ranks";
  EXPECT_EQ(reports[1], "") << "rank 0 says it";
  EXPECT_THAT(reports[0], ::testing::AnyOf(HasSubstr("need 6 2 MiB pages"), HasSubstr("are on 2 MiB pages")));
  if (pool_holds_them) {
    EXPECT_THAT(log.text(), HasSubstr("the shared sparse tables are on 2 MiB pages from the host's pool"));
  } else {
    EXPECT_THAT(log.text(), HasSubstr("the shared sparse tables are on 4 KiB pages ("));
    EXPECT_THAT(log.text(), HasSubstr("they need 3 2 MiB pages from the host's pool, which had "));
    // Where the pool is empty (the CI machines), the advice to fill it; another filled part way says the
    // total that leaves room for these 3.
    EXPECT_THAT(log.text(), ::testing::ContainsRegex("sysctl vm.nr_hugepages=[0-9]+ makes room for them"));
  }
}

// Two sparse tables used at different depths, as in the SGNS model: backward readies "out" before the tower,
// then "in". With ddp.overlap_sparse the helper sums each table for its owners as soon as it is ready.
struct TwoTablesImpl : torch::nn::Module {
  TwoTablesImpl() {
    in = register_module("in", torch::nn::Embedding(torch::nn::EmbeddingOptions(40, 6).sparse(true)));
    tower = register_module("tower", torch::nn::Linear(6, 6));
    out = register_module("out", torch::nn::Embedding(torch::nn::EmbeddingOptions(40, 6).sparse(true)));
  }
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b) { return (tower(in(a)) * out(b)).sum(-1); }
  torch::nn::Embedding in{nullptr}, out{nullptr};
  torch::nn::Linear tower{nullptr};
};

struct OverlapRun {
  std::vector<std::vector<torch::Tensor>> params;  // per rank
  std::vector<DdpStats> stats;
};

// 12 steps on 3 ranks: every other step accumulates two micro-batches under noSync; steps 2, 5, 8 and 11
// replace the "in" table's gradient after backward with a halved one (the sync must use it), steps 2 and 8
// as a new tensor made after the old one is dropped (it may reuse its address).
OverlapRun trainTwoTables(SparseSync mode, bool overlap) {
  constexpr int kWorld = 3;
  torch::manual_seed(5);
  std::vector<std::shared_ptr<TwoTablesImpl>> models;
  for (int r = 0; r < kWorld; ++r) models.push_back(std::make_shared<TwoTablesImpl>());
  for (int r = 1; r < kWorld; ++r) copyParams(*models[0], *models[r]);
  OverlapRun run;
  run.params.resize(kWorld);
  run.stats.resize(kWorld);
  runDdpRanks(kWorld, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    TwoTablesImpl& model = *models[rank];
    DdpOptions options;
    options.sparse_sync = mode;
    options.overlap_sparse = overlap;
    DistributedDataParallel ddp(model, comm, options);
    torch::optim::SGD sgd(model.parameters(), torch::optim::SGDOptions(0.05));
    auto batch = [&](int s, int micro) {
      const auto base = torch::arange(9, torch::kLong) + 9 * rank + 3 * micro;
      const auto a = (base * base + s) % 40;
      const auto b = (base * 7 + s * 3) % 31;  // skewed: rows 31-39 of "out" are never touched
      return (model.forward(a, b) - torch::cos(base.to(torch::kFloat))).pow(2).mean();
    };
    for (int s = 0; s < 12; ++s) {
      ddp.zeroGrad();
      sgd.zero_grad();
      if (s % 2 == 1) {
        auto guard = ddp.noSync();
        batch(s, 1).backward();
        ddp.finalize();  // a no-op under noSync
      }
      batch(s, 0).backward();
      if (s % 3 == 2) {
        torch::Tensor& grad = model.in->weight.mutable_grad();
        if (s % 2 == 0) {
          const torch::Tensor ids = grad._indices().clone(), values = grad._values() * 0.5;
          const auto sizes = grad.sizes().vec();
          grad = torch::Tensor();
          grad = torch::sparse_coo_tensor(ids, values, sizes);
        } else {
          grad = grad * 0.5;
        }
      }
      ddp.finalize();
      sgd.step();
    }
    ddp.zeroGrad();  // shared tables: every owner has written its rows
    for (const auto& p : model.parameters()) run.params[rank].push_back(p.detach().clone());
    run.stats[rank] = ddp.stats();
  });
  return run;
}

// The overlap moves work to another thread, not a single bit: the same parameters on every rank, with the
// helper's time counted apart from the sync's.
void expectOverlapChangesNoBit(SparseSync mode) {
  const OverlapRun off = trainTwoTables(mode, false);
  const OverlapRun on = trainTwoTables(mode, true);
  for (size_t r = 0; r < on.params.size(); ++r) {
    ASSERT_EQ(on.params[r].size(), off.params[r].size());
    for (size_t i = 0; i < on.params[r].size(); ++i) {
      ASSERT_TRUE(torch::isfinite(on.params[r][i]).all().item<bool>()) << "rank " << r << ", parameter " << i;
      EXPECT_TRUE(torch::equal(on.params[r][i], off.params[r][i])) << "rank " << r << ", parameter " << i;
      EXPECT_TRUE(torch::equal(on.params[r][i], on.params[0][i])) << "rank " << r << " differs from rank 0";
    }
    EXPECT_GT(on.stats[r].sum_sparse_overlapped_time.count(), 0) << "rank " << r << ": the helper never ran";
    EXPECT_EQ(off.stats[r].sum_sparse_overlapped_time.count(), 0) << "rank " << r;
    // Both tables came from the helper's work on the 8 steps that kept their gradients; none on the 4 that
    // replaced one (every table summed again).
    EXPECT_EQ(on.stats[r].sum_sparse_tables_overlapped, 16u) << "rank " << r;
    EXPECT_EQ(off.stats[r].sum_sparse_tables_overlapped, 0u) << "rank " << r;
    EXPECT_EQ(on.stats[r].sum_sparse_bytes_sent, off.stats[r].sum_sparse_bytes_sent) << "rank " << r;
  }
}

TEST_F(DdpTest, SparseOverlapChangesNoBitInOwnerMode) { expectOverlapChangesNoBit(SparseSync::kOwner); }

TEST_F(DdpTest, SparseOverlapChangesNoBitWithSharedTables) {
#if !RINGTRAIN_WITH_GLOO
  GTEST_SKIP() << "the thread communicator cannot share a host's memory";
#endif
  expectOverlapChangesNoBit(SparseSync::kShared);
}

// A noSync() backward after the synchronized one, before finalize(), would add to gradients already on their
// way (dense buckets in flight, sparse rows summed for their owners): an error, not a silently wrong step.
TEST_F(DdpTest, NoSyncBackwardAfterTheSynchronizedOneThrows) {
  auto model = std::make_shared<MlpImpl>();
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, kTimeout);
  DistributedDataParallel ddp(*model, comm);
  torch::mse_loss(model->forward(inputs(0, 4)), targets(0, 4)).backward();
  EXPECT_THAT(
      [&] {
        auto guard = ddp.noSync();
        torch::mse_loss(model->forward(inputs(0, 4)), targets(0, 4)).backward();
      },
      ThrowsMessage<std::exception>(HasSubstr("under noSync() after this iteration's synchronized backward")));
}

// The same when the noSync() backward touches only a parameter the synchronized one left alone: it would go
// out with this step's buckets.
TEST_F(DdpTest, NoSyncBackwardAfterTheSynchronizedOneThrowsForUntouchedParametersToo) {
  auto model = std::make_shared<MlpImpl>(16, /*with_unused=*/true);
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, kTimeout);
  DistributedDataParallel ddp(*model, comm);
  torch::mse_loss(model->forward(inputs(0, 4)), targets(0, 4)).backward();  // "unused" gets nothing
  const torch::Tensor features = model->forward(inputs(1, 4)).detach();      // only "unused" below
  EXPECT_THAT(
      [&] {
        auto guard = ddp.noSync();
        torch::mse_loss(model->unused->forward(features), targets(1, 4)).backward();
      },
      ThrowsMessage<std::exception>(HasSubstr("'unused.")));
}

// Under static_graph a parameter unused in the first iteration is pre-marked ready; a gradient for it in a
// noSync() micro-batch only waits in its slot (and goes out with its bucket), it is no "second gradient";
// in a synchronized backward it is refused, with that reason.
TEST_F(DdpTest, StaticGraphParameterUnusedAtFirstMayGetAGradientUnderNoSync) {
  auto model = std::make_shared<MlpImpl>(16, /*with_unused=*/true);
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, kTimeout);
  DdpOptions options;
  options.static_graph = true;
  DistributedDataParallel ddp(*model, comm, options);
  torch::mse_loss(model->forward(inputs(0, 4)), targets(0, 4)).backward();
  ddp.finalize();  // "unused" got no gradient: pre-marked from now on
  ddp.zeroGrad();
  {
    auto guard = ddp.noSync();
    EXPECT_NO_THROW(torch::mse_loss(model->unused->forward(model->forward(inputs(1, 4))), targets(1, 4)).backward());
  }
  torch::mse_loss(model->forward(inputs(2, 4)), targets(2, 4)).backward();
  ddp.finalize();
  EXPECT_GT(model->unused->weight.grad().abs().sum().item<double>(), 0.0) << "the noSync gradient was kept";
  // In a synchronized backward it is refused, with static_graph's reason (not as "a second gradient").
  ddp.zeroGrad();
  try {
    torch::mse_loss(model->unused->forward(model->forward(inputs(3, 4))), targets(3, 4)).backward();
    ADD_FAILURE() << "no error";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("static_graph took it as unused in every iteration"));
  }
}

// A second backward without finalize() is an error for sparse tables too: the first gradient has gone to
// the sync already.
TEST_F(DdpTest, SecondBackwardWithoutFinalizeThrowsForSparseTables) {
  auto model = std::make_shared<EmbedImpl>();
  model->head->weight.set_requires_grad(false);
  model->head->bias.set_requires_grad(false);
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, kTimeout);
  DistributedDataParallel ddp(*model, comm);
  const auto ids = torch::arange(5, torch::kLong);
  model->forward(ids).sum().backward();
  EXPECT_THAT([&] { model->forward(ids).sum().backward(); },
              ThrowsMessage<std::exception>(HasSubstr("'emb.weight' received a second gradient")));
}

// Skipping ddp.zeroGrad() would let a rank's forward read rows another rank is still writing: the second
// finalize says so on every rank instead.
TEST_F(DdpTest, SparseSharedWithoutDdpZeroGradIsAnError) {
#if RINGTRAIN_WITH_GLOO
  torch::manual_seed(5);
  std::vector<std::shared_ptr<EmbedImpl>> models = {std::make_shared<EmbedImpl>(), std::make_shared<EmbedImpl>()};
  auto results = testing::runWithCommunicators(2, testing::testCommOptions(20.0), [&](comm::Communicator& comm) {
    DdpOptions options;
    options.sparse_sync = SparseSync::kShared;
    DistributedDataParallel ddp(*models[comm.rank()], comm, options);
    torch::optim::SGD sgd(models[comm.rank()]->parameters(), torch::optim::SGDOptions(0.5));
    for (int s = 0; s < 2; ++s) {
      sgd.zero_grad();
      torch::mse_loss(models[comm.rank()]->forward(torch::arange(4, torch::kLong) + s), torch::zeros({4})).backward();
      ddp.finalize();
      sgd.step();
    }
  });
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_THAT(results[r].error, ::testing::HasSubstr("call ddp.zeroGrad() after the optimizer step")) << "rank " << r;
    EXPECT_THAT(results[r].error, ::testing::HasSubstr("step 2")) << "rank " << r;
  }
#else
  GTEST_SKIP() << "the thread communicator cannot share a host's memory";
#endif
}

// Destroyed, a shared-mode DDP gives each rank a private copy of the tables and of shareOnHost()'s state, in
// place: a rank that trains on (or wraps the module again in another mode) writes only its own copy.
TEST_F(DdpTest, SharedTablesArePrivateAgainAfterDestruction) {
#if RINGTRAIN_WITH_GLOO
  for (const bool unshare : {true, false}) {
    SCOPED_TRACE(unshare ? "unshare_at_destruction on" : "unshare_at_destruction off");
    torch::manual_seed(5);
    std::vector<std::shared_ptr<EmbedImpl>> models = {std::make_shared<EmbedImpl>(), std::make_shared<EmbedImpl>()};
    std::vector<at::Tensor> states(2);
    std::vector<float> seen(2);
    auto results = testing::runWithCommunicators(2, testing::testCommOptions(20.0), [&](comm::Communicator& comm) {
      const int rank = comm.rank();
      EmbedImpl& model = *models[rank];
      {
        DdpOptions options;
        options.sparse_sync = SparseSync::kShared;
        options.unshare_at_destruction = unshare;
        DistributedDataParallel ddp(model, comm, options);
        ASSERT_TRUE(ddp.sharesSparseParameters());
        states[rank] = ddp.shareOnHost(torch::zeros({50}), "emb.weight state");
        torch::optim::SGD sgd(model.parameters(), torch::optim::SGDOptions(0.5));
        ddp.zeroGrad();
        torch::mse_loss(model.forward(torch::arange(4, torch::kLong) + rank), torch::zeros({4})).backward();
        ddp.finalize();
        sgd.step();
        ddp.zeroGrad();  // every owner's rows are in
      }
      {
        torch::NoGradGuard no_grad;
        if (rank == 1) {
          model.emb->weight.add_(1000.0);
          states[rank].add_(7.0);
        }
      }
      comm.barrier();
      seen[rank] = model.emb->weight.sum().item<float>();
      if (rank == 0) EXPECT_EQ(states[0].sum().item<float>(), unshare ? 0.0f : 350.0f);
    });
    testing::expectAllOk(results);
    const float added = 1000.0f * 50 * 6;
    if (unshare) {
      EXPECT_NEAR(seen[1] - seen[0], added, 1.0) << "rank 0 saw rank 1's write, or rank 1 lost it";
    } else {
      EXPECT_EQ(seen[0], seen[1]) << "without unsharing both ranks read one table";
    }
  }
#else
  GTEST_SKIP() << "the thread communicator cannot share a host's memory";
#endif
}

// auto (the training job's default) shares the tables when the ranks share a host, and all-gathers otherwise.
TEST_F(DdpTest, SparseAutoSharesOnOneHostOnly) {
#if RINGTRAIN_WITH_GLOO
  for (const bool same_host : {true, false}) {
    auto options = testing::testCommOptions(20.0);
    options.same_host_copy = same_host;
    std::vector<std::shared_ptr<EmbedImpl>> models = {std::make_shared<EmbedImpl>(), std::make_shared<EmbedImpl>()};
    auto results = testing::runWithCommunicators(2, options, [&](comm::Communicator& comm) {
      DdpOptions ddp_options;
      ddp_options.sparse_sync = SparseSync::kAuto;
      DistributedDataParallel ddp(*models[comm.rank()], comm, ddp_options);
      EXPECT_EQ(ddp.sharesSparseParameters(), same_host);
      EXPECT_EQ(ddp.sharedParameterNames(), same_host ? std::vector<std::string>{"emb.weight"} : std::vector<std::string>{});
    });
    testing::expectAllOk(results);
  }
#else
  GTEST_SKIP() << "needs Gloo";
#endif
}

// Without same-host memory (as across hosts) shared falls back to allgather and still trains correctly.
TEST_F(DdpTest, SparseSharedFallsBackToAllgatherAcrossHosts) {
#if RINGTRAIN_WITH_GLOO
  auto options = testing::testCommOptions(20.0);
  options.same_host_copy = false;
  torch::manual_seed(4);
  std::vector<std::shared_ptr<EmbedImpl>> models = {std::make_shared<EmbedImpl>(), std::make_shared<EmbedImpl>()};
  auto results = testing::runWithCommunicators(2, options, [&](comm::Communicator& comm) {
    DdpOptions ddp_options;
    ddp_options.sparse_sync = SparseSync::kShared;
    DistributedDataParallel ddp(*models[comm.rank()], comm, ddp_options);
    EXPECT_FALSE(ddp.sharesSparseParameters());
    EXPECT_TRUE(ddp.sharedParameterNames().empty());
    EXPECT_THROW(ddp.shareOnHost(torch::zeros({2}), "state"), Error);
    SparseSyncCounts counts;
    try {
      syncSparseGradient(comm, models[comm.rank()]->emb->weight, models[comm.rank()]->emb->weight.grad(),
                         SparseSync::kShared, counts);
      ADD_FAILURE() << "shared outside DistributedDataParallel returned only this rank's rows";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("use it through DistributedDataParallel"));
    }
    torch::mse_loss(models[comm.rank()]->forward(torch::arange(4, torch::kLong) + comm.rank()), torch::zeros({4})).backward();
    ddp.finalize();
    EXPECT_GT(ddp.stats().sparse_rows_global, ddp.stats().sparse_rows_local) << "all-gathered: every rank has every row";
  });
  testing::expectAllOk(results);
#else
  GTEST_SKIP() << "needs Gloo";
#endif
}

// Owner and allgather agree on the same inputs, and owner mode moves fewer bytes when rows repeat.
TEST_F(DdpTest, SparseOwnerEqualsAllgather) {
  const int world = 4;
  std::vector<at::Tensor> grads;
  for (int r = 0; r < world; ++r) {
    auto rows = (torch::arange(30, torch::kLong) * (r + 1)) % 20;  // heavy overlap
    auto values = torch::sin(torch::arange(30 * 3, torch::kFloat).reshape({30, 3}) + r);
    grads.push_back(torch::sparse_coo_tensor(rows.unsqueeze(0), values, {100, 3}));
  }
  auto param = torch::zeros({100, 3});
  std::vector<at::Tensor> owner(world), gather(world);
  std::vector<SparseSyncCounts> owner_counts(world), gather_counts(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    owner[rank] = syncSparseGradient(comm, param, grads[rank], SparseSync::kOwner, owner_counts[rank]);
    gather[rank] = syncSparseGradient(comm, param, grads[rank], SparseSync::kAllgather, gather_counts[rank]);
  });
  at::Tensor expected = grads[0].to_dense();
  for (int r = 1; r < world; ++r) expected += grads[r].to_dense();
  expected /= world;
  size_t owner_bytes = 0, gather_bytes = 0;
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(owner[r].is_coalesced());
    EXPECT_TRUE(torch::allclose(owner[r].to_dense(), expected, 1e-6, 1e-7));
    EXPECT_TRUE(torch::allclose(gather[r].to_dense(), expected, 1e-6, 1e-7));
    EXPECT_TRUE(torch::equal(owner[r].indices(), gather[r].indices()));
    EXPECT_TRUE(torch::equal(owner[r].values(), gather[r].values())) << "the same sums in the same rank order";
    EXPECT_TRUE(torch::equal(owner[r].to_dense(), owner[0].to_dense()));  // identical on every rank
    owner_bytes += owner_counts[r].bytes_received;
    gather_bytes += gather_counts[r].bytes_received;
  }
  EXPECT_LT(owner_bytes, gather_bytes);
}

// Several tables in one call (one message per rank in allgather mode): each result equals its table's
// average, in both modes, including a table with no row on some ranks and a table of another width.
TEST_F(DdpTest, SparseSeveralTablesInOneExchange) {
  const int world = 3;
  const std::vector<int64_t> widths = {3, 5};
  std::vector<at::Tensor> params = {torch::zeros({40, widths[0]}), torch::zeros({25, widths[1]})};
  std::vector<std::vector<at::Tensor>> grads(world);  // grads[rank][table]
  for (int r = 0; r < world; ++r) {
    auto rows_a = (torch::arange(12, torch::kLong) * (r + 2)) % 40;
    grads[r].push_back(torch::sparse_coo_tensor(rows_a.unsqueeze(0),
                                                torch::cos(torch::arange(12 * 3, torch::kFloat).reshape({12, 3}) * (r + 1)),
                                                {40, 3}));
    if (r == 1) {
      grads[r].push_back(at::Tensor());  // this rank touched no row of table 1
    } else {
      auto rows_b = torch::tensor(std::vector<int64_t>{r, 7, 24}, torch::kLong);
      grads[r].push_back(torch::sparse_coo_tensor(rows_b.unsqueeze(0),
                                                  torch::full({3, 5}, static_cast<float>(r + 1)), {25, 5}));
    }
  }
  for (SparseSync mode : {SparseSync::kAllgather, SparseSync::kOwner}) {
    std::vector<std::vector<at::Tensor>> results(world);
    runDdpRanks(world, [&](comm::Communicator& comm) {
      SparseSyncCounts counts;
      results[comm.rank()] = syncSparseGradients(comm, params, grads[comm.rank()], mode, counts);
    });
    for (size_t t = 0; t < params.size(); ++t) {
      at::Tensor expected = torch::zeros_like(params[t]);
      for (int r = 0; r < world; ++r) {
        if (grads[r][t].defined()) expected += grads[r][t].to_dense();
      }
      expected /= world;
      for (int r = 0; r < world; ++r) {
        ASSERT_EQ(results[r].size(), params.size());
        EXPECT_TRUE(torch::allclose(results[r][t].to_dense(), expected, 1e-6, 1e-7))
            << "table " << t << " rank " << r << (mode == SparseSync::kOwner ? " owner" : " allgather");
      }
    }
  }
}

// A double table (summed in double), a dense gradient standing for every row, and a table whose rows this
// rank did not touch, over three ranks and several calls of one SparseRowSync (its scratch is reused).
TEST_F(DdpTest, SparseRowSyncKeepsDoublesAndDenseGradientsAcrossCalls) {
  const int world = 3;
  auto param = torch::zeros({20, 2}, torch::kDouble);
  for (SparseSync mode : {SparseSync::kAllgather, SparseSync::kOwner}) {
    std::vector<std::vector<at::Tensor>> results(world);
    std::vector<std::vector<at::Tensor>> grads(world);
    for (int r = 0; r < world; ++r) {
      for (int call = 0; call < 3; ++call) {
        if (r == 2 && call == 1) {
          grads[r].push_back(torch::full({20, 2}, 0.25, torch::kDouble));  // dense: every row
        } else if (r == 1 && call == 2) {
          grads[r].push_back(at::Tensor());  // no row touched on this rank
        } else {
          auto rows = (torch::arange(7, torch::kLong) * (r + call + 1)) % 20;
          grads[r].push_back(torch::sparse_coo_tensor(
              rows.unsqueeze(0), torch::arange(14, torch::kDouble).reshape({7, 2}) / (r + 3.0) + call, {20, 2}));
        }
      }
    }
    runDdpRanks(world, [&](comm::Communicator& comm) {
      SparseRowSync sync(mode);
      for (int call = 0; call < 3; ++call) {
        SparseSyncCounts counts;
        results[comm.rank()].push_back(sync.sync(comm, {param}, {grads[comm.rank()][call]}, counts).front());
      }
    });
    for (int call = 0; call < 3; ++call) {
      at::Tensor expected = torch::zeros_like(param);
      for (int r = 0; r < world; ++r) {
        const at::Tensor& g = grads[r][call];
        if (g.defined()) expected += g.is_sparse() ? g.to_dense() : g;
      }
      expected /= world;
      for (int r = 0; r < world; ++r) {
        const at::Tensor& got = results[r][call];
        EXPECT_EQ(got.scalar_type(), torch::kDouble);
        EXPECT_TRUE(got.is_coalesced());
        EXPECT_TRUE(torch::allclose(got.to_dense(), expected, 1e-12, 1e-14))
            << "call " << call << " rank " << r << (mode == SparseSync::kOwner ? " owner" : " allgather");
        EXPECT_TRUE(torch::equal(got.to_dense(), results[0][call].to_dense()));  // the same bits everywhere
      }
    }
  }
}

// A second prepare() of one table in a step is refused, and must not pass off the gradient it refused as
// the one the helper summed: sync() with that gradient sums it again.
TEST_F(DdpTest, SparseRowSyncSumsAgainAfterARefusedSecondPrepare) {
  const int world = 2;
  auto param = torch::zeros({10, 2});
  const auto sparse = [](int64_t first_row, float value) {
    auto rows = torch::arange(first_row, first_row + 3, torch::kLong).unsqueeze(0);
    return torch::sparse_coo_tensor(rows, torch::full({3, 2}, value), {10, 2});
  };
  std::vector<at::Tensor> results(world);
  std::vector<int> refused(world, 0);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int r = comm.rank();
    SparseRowSync sync(SparseSync::kOwner);
    ASSERT_TRUE(sync.prepare(comm, {param}, 0, sparse(r, 1.0f)));
    const at::Tensor replaced = sparse(5 + r, 4.0f);
    try {
      sync.prepare(comm, {param}, 0, replaced);
    } catch (const std::exception&) {
      refused[r] = 1;
    }
    SparseSyncCounts counts;
    results[r] = sync.sync(comm, {param}, {replaced}, counts).front();
  });
  at::Tensor expected = (sparse(5, 4.0f).to_dense() + sparse(6, 4.0f).to_dense()) / world;
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(refused[r], 1) << "rank " << r;
    EXPECT_TRUE(torch::allclose(results[r].to_dense(), expected)) << "rank " << r;
  }
}

// Dtypes the row summer does not take (bfloat16 here) are summed by sorting, and in owner mode split by
// owner from the sorted rows: every rank must still get the average, the same on every rank.
TEST_F(DdpTest, SparseRowSyncSumsOtherDtypesBySortingInEveryMode) {
  const int world = 3;
  auto param = torch::zeros({30, 4}, torch::kBFloat16);
  std::vector<at::Tensor> grads(world);
  for (int r = 0; r < world; ++r) {
    auto rows = (torch::arange(9, torch::kLong) * (r + 2)) % 30;  // duplicates within and across ranks
    // Quarters: exact in bfloat16, so only the division by the world size rounds.
    auto values = (torch::arange(36, torch::kFloat).reshape({9, 4}) % 8 + r) / 4;
    grads[r] = torch::sparse_coo_tensor(rows.unsqueeze(0), values.to(torch::kBFloat16), {30, 4});
  }
  at::Tensor expected = torch::zeros({30, 4});
  for (const auto& g : grads) expected += g.to_dense().to(torch::kFloat);
  expected /= world;
  for (SparseSync mode : {SparseSync::kAllgather, SparseSync::kOwner}) {
    std::vector<at::Tensor> results(world);
    runDdpRanks(world, [&](comm::Communicator& comm) {
      SparseSyncCounts counts;
      results[comm.rank()] = SparseRowSync(mode).sync(comm, {param}, {grads[comm.rank()]}, counts).front();
    });
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(results[r].scalar_type(), torch::kBFloat16);
      EXPECT_TRUE(torch::allclose(results[r].to_dense().to(torch::kFloat), expected, 1e-2, 1e-2))
          << "rank " << r << (mode == SparseSync::kOwner ? " owner" : " allgather");
      EXPECT_TRUE(torch::equal(results[r].to_dense(), results[0].to_dense())) << "rank " << r;
    }
  }
}

// The device path of the sparse-row sync (NCCL, CUDA tables) is ATen ops and allgatherAsync, so its
// multi-rank logic runs here on host tensors: ranks with different row counts (the padding), a rank without
// rows, a dense gradient, duplicates within and across ranks. A lent GPU has one device, where NCCL runs
// only at world size 1 (tests/ddp/sparse_sync_gputest.cc).
TEST_F(DdpTest, DevicePathOfTheSparseSyncMatchesTheAverageAcrossRanks) {
  const int world = 3;
  std::vector<at::Tensor> params = {torch::zeros({40, 3}), torch::zeros({25, 2})};
  std::vector<std::vector<at::Tensor>> grads(world);  // grads[rank][table]
  for (int r = 0; r < world; ++r) {
    const int64_t n = 5 + 4 * r;
    auto rows = (torch::arange(n, torch::kLong) * (r + 2) + 1) % 40;  // never row 0: the padding rows' id
    rows[0] = 7;  // a row every rank touches
    grads[r].push_back(torch::sparse_coo_tensor(rows.unsqueeze(0), torch::randn({n, 3}), {40, 3}));
    if (r == 0) {
      grads[r].push_back(torch::randn({25, 2}));  // dense: every row
    } else if (r == 1) {
      grads[r].push_back(at::Tensor());  // no row of table 1
    } else {
      auto dup = torch::tensor(std::vector<int64_t>{3, 24, 3}, torch::kLong);
      grads[r].push_back(torch::sparse_coo_tensor(dup.unsqueeze(0), torch::randn({3, 2}), {25, 2}));
    }
  }
  std::vector<std::vector<at::Tensor>> results(world);
  std::vector<SparseSyncCounts> counts(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    results[comm.rank()] = detail::syncSparseRowsOnDevice(comm, params, grads[comm.rank()], counts[comm.rank()]);
  });
  for (size_t t = 0; t < params.size(); ++t) {
    at::Tensor expected = torch::zeros_like(params[t]);
    for (int r = 0; r < world; ++r) {
      if (grads[r][t].defined()) expected += grads[r][t].is_sparse() ? grads[r][t].to_dense() : grads[r][t];
    }
    expected /= world;
    for (int r = 0; r < world; ++r) {
      ASSERT_EQ(results[r].size(), params.size());
      const at::Tensor& got = results[r][t];
      EXPECT_TRUE(got.is_sparse() && got.is_coalesced()) << "table " << t << " rank " << r;
      EXPECT_TRUE(torch::allclose(got.to_dense(), expected, 1e-6, 1e-7)) << "table " << t << " rank " << r;
      EXPECT_TRUE(torch::equal(got.to_dense(), results[0][t].to_dense())) << "table " << t << " rank " << r;
    }
  }
  // Exactly the rows some rank touched: the padding rows (id 0, zeros) must not come back as a row 0.
  std::set<int64_t> touched;
  for (int r = 0; r < world; ++r) {
    const at::Tensor ids = grads[r][0]._indices()[0];
    for (int64_t i = 0; i < ids.numel(); ++i) touched.insert(ids[i].item<int64_t>());
  }
  EXPECT_EQ(results[0][0]._nnz(), static_cast<int64_t>(touched.size()));
  EXPECT_EQ(touched.count(0), 0u);
  // Rank 1: 9 rows of table 0 with row 7 twice, none of table 1.
  EXPECT_EQ(counts[1].rows_local, static_cast<size_t>(8 + 0));
  EXPECT_EQ(counts[0].rows_global, static_cast<size_t>(results[0][0]._nnz() + results[0][1]._nnz()));
  // Table 1 is dense on rank 0: all 25 rows travel, and every rank pads its rows to that count.
  EXPECT_EQ(results[0][1]._nnz(), 25);
  EXPECT_GT(counts[0].bytes_sent, 0u);
}

// k micro-batches under noSync (loss / k) then one synchronized: equals one process on all k x world rows.
// Ranks may run different numbers of noSync() passes before their synchronized one (ddp.steal's do): rank 1
// trains its k micro-batches' rows in one pass.
TEST_F(DdpTest, NoSyncAccumulationMatchesOneLargeBatch) {
  const int world = 2, k = 3, steps = 5;
  const int64_t micro = 4;
  torch::manual_seed(3);
  auto reference = std::make_shared<MlpImpl>();
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>());
  copyParams(*reference, *models[0]);
  const int64_t global = world * k * micro;
  std::vector<int64_t> collectives(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.1));
    for (int s = 0; s < steps; ++s) {
      auto x = inputs(s, global), y = targets(s, global);
      ddp.zeroGrad();
      if (rank == 1) {
        auto rows = [&](const torch::Tensor& t) { return t.narrow(0, rank * k * micro, k * micro); };
        torch::mse_loss(models[rank]->forward(rows(x)), rows(y)).backward();
        ddp.finalize();
        sgd.step();
        continue;
      }
      for (int m = 0; m < k; ++m) {
        auto rows = [&](const torch::Tensor& t) { return t.narrow(0, (rank * k + m) * micro, micro); };
        if (m + 1 < k) {
          auto guard = ddp.noSync();
          const auto before = comm.nextSequence();
          (torch::mse_loss(models[rank]->forward(rows(x)), rows(y)) / k).backward();
          ddp.finalize();  // a no-op under noSync
          EXPECT_EQ(comm.nextSequence(), before);
        } else {
          (torch::mse_loss(models[rank]->forward(rows(x)), rows(y)) / k).backward();
          ddp.finalize();
        }
      }
      sgd.step();
    }
  });
  torch::optim::SGD sgd(reference->parameters(), torch::optim::SGDOptions(0.1));
  for (int s = 0; s < steps; ++s) {
    sgd.zero_grad();
    torch::mse_loss(reference->forward(inputs(s, global)), targets(s, global)).backward();
    sgd.step();
  }
  for (int r = 0; r < world; ++r) expectSameParams(*reference, *models[r], 1e-5, "rank " + std::to_string(r));
}

// A parameter no rank uses is reported by name, and keeps no gradient after finalize(), as in a process of
// its own: an optimizer then leaves it alone (it used to get zeros, which SGD's weight decay applied).
TEST_F(DdpTest, AParameterNoRankUsesIsReportedByNameAndKeepsNoGradient) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16, /*with_unused=*/true));
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    MlpImpl& model = *models[rank];
    DistributedDataParallel ddp(model, comm);
    torch::optim::SGD sgd(model.parameters(), torch::optim::SGDOptions(0.1).weight_decay(0.1).momentum(0.9));
    const at::Tensor before = model.unused->weight.detach().clone();
    for (int s = 0; s < 3; ++s) {
      s == 0 ? ddp.zeroGrad() : sgd.zero_grad();
      torch::mse_loss(model.forward(inputs(s, 4)), targets(s, 4)).backward();
      ddp.finalize();
      EXPECT_FALSE(model.unused->weight.grad().defined()) << "step " << s;
      EXPECT_TRUE(model.fc1->weight.grad().defined());
      sgd.step();
    }
    const auto& unused = ddp.stats().unused_parameters;
    EXPECT_EQ(unused, (std::vector<std::string>{"unused.weight", "unused.bias"}));
    EXPECT_NE(ddp.stats().toString().find("unused.weight"), std::string::npos);
    EXPECT_TRUE(torch::equal(model.unused->weight, before)) << "weight decay moved a parameter no rank used";
  });
}

// One rank's unused parameter is another's used one: it gets the mean as usual (the unused rank's share is
// zeros), and once any rank has used it, it keeps a gradient from then on.
TEST_F(DdpTest, AParameterUnusedOnOneRankGetsTheMeanOfTheOthers) {
  const int world = 2;
  std::vector<std::shared_ptr<TwoHeadImpl>> models;
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(3);
    models.push_back(std::make_shared<TwoHeadImpl>());
  }
  std::vector<at::Tensor> grads(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    ddp.zeroGrad();
    models[rank]->forward(inputs(0, 4), /*use_b=*/rank == 0).pow(2).mean().backward();
    ddp.finalize();
    ASSERT_TRUE(models[rank]->b->weight.grad().defined());
    grads[rank] = models[rank]->b->weight.grad().clone();
  });
  EXPECT_TRUE(torch::equal(grads[0], grads[1]));
  // Rank 0's own gradient of b, alone: the mean over two ranks is half of it.
  torch::manual_seed(3);
  auto alone = std::make_shared<TwoHeadImpl>();
  alone->forward(inputs(0, 4), true).pow(2).mean().backward();
  EXPECT_TRUE(torch::allclose(grads[0], alone->b->weight.grad() / 2, 1e-6, 1e-7));
}

// BatchNorm's running statistics come from each rank's own batch: finalize() gives every rank rank 0's;
// broadcast_buffers off leaves each rank its own.
TEST_F(DdpTest, FinalizeGivesEveryRankRankZerosBuffers) {
  for (const bool broadcast : {true, false}) {
    SCOPED_TRACE(broadcast ? "broadcast_buffers on" : "broadcast_buffers off");
    const int world = 3;
    std::vector<torch::nn::Sequential> models;
    std::vector<torch::nn::BatchNorm1d> norms;
    for (int r = 0; r < world; ++r) {
      torch::manual_seed(1);
      norms.emplace_back(3);
      models.emplace_back(torch::nn::Linear(8, 3), norms.back());
    }
    std::vector<at::Tensor> means(world), vars(world);
    runDdpRanks(world, [&](comm::Communicator& comm) {
      const int rank = comm.rank();
      DdpOptions options;
      options.broadcast_buffers = broadcast;
      DistributedDataParallel ddp(*models[rank], comm, options);
      for (int step = 0; step < 3; ++step) {
        ddp.zeroGrad();
        // Each rank's batch has its own mean: unsynchronized running means drift apart.
        at::Tensor x = inputs(step * world + rank, 8) + static_cast<float>(rank);
        models[rank]->forward(x).pow(2).mean().backward();
        ddp.finalize();
      }
      means[rank] = norms[rank]->running_mean.clone();
      vars[rank] = norms[rank]->running_var.clone();
    });
    EXPECT_GT(means[0].abs().sum().item<float>(), 0.0f) << "the forwards did not update the running mean";
    for (int r = 1; r < world; ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      EXPECT_EQ(torch::equal(means[r], means[0]), broadcast) << means[r] << means[0];
      EXPECT_EQ(torch::equal(vars[r], vars[0]), broadcast) << vars[r] << vars[0];
    }
  }
}

// A rank out of data may call finalize() without a backward to keep its peers company: it is counted (and
// warned about once), since the same call after a forgotten backward silently halves the average.
TEST_F(DdpTest, FinalizeWithoutABackwardIsCounted) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16));
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    for (int s = 0; s < 3; ++s) {
      ddp.zeroGrad();
      if (rank == 0 || s != 1) torch::mse_loss(models[rank]->forward(inputs(s, 4)), targets(s, 4)).backward();
      ddp.finalize();
    }
    EXPECT_EQ(ddp.stats().steps_without_backward, rank == 1 ? 1 : 0);
    if (rank == 1) EXPECT_NE(ddp.stats().toString().find("1 step(s) without a backward"), std::string::npos);
  });
}

// A parameter frozen at construction has no bucket: unfreezing it later is an error naming it (its gradient
// would not be synchronized), and checkReplicas() compares it all the same.
TEST_F(DdpTest, UnfreezingAParameterAfterConstructionIsNamed) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) {
    models.push_back(std::make_shared<MlpImpl>(16));
    models.back()->fc1->weight.set_requires_grad(false);
  }
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    MlpImpl& model = *models[rank];
    DistributedDataParallel ddp(model, comm);
    ddp.zeroGrad();
    torch::mse_loss(model.forward(inputs(rank, 4)), targets(rank, 4)).backward();
    ddp.finalize();
    ddp.checkReplicas();
    {
      torch::NoGradGuard no_grad;
      if (rank == 1) model.fc1->weight.add_(1.0);
    }
    try {
      ddp.checkReplicas();
      ADD_FAILURE() << "a frozen parameter that differs went unnoticed";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("'fc1.weight' (rank 1)"));
    }
    model.fc1->weight.set_requires_grad(true);
    ddp.zeroGrad();
    torch::mse_loss(model.forward(inputs(rank, 4)), targets(rank, 4)).backward();
    try {
      ddp.finalize();
      ADD_FAILURE() << "an unfrozen parameter went unnoticed";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("parameter 'fc1.weight' was frozen"));
    }
  });
}

// Models that differ across ranks are refused at construction as bad input (ConfigError, exit code 2), naming
// the parameter and both sides; one frozen on a rank only is named as frozen (it used to read as rank 1
// having another parameter there).
TEST_F(DdpTest, ModelsThatDifferAcrossRanksAreNamedAtConstruction) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16));
  models[1]->fc1->bias.set_requires_grad(false);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    try {
      DistributedDataParallel ddp(*models[comm.rank()], comm);
      ADD_FAILURE() << "a parameter frozen on rank 1 only went unnoticed";
    } catch (const ConfigError& e) {  // bad input: exit code 2
      EXPECT_EQ(e.exitCode(), kExitBadInput);
      EXPECT_THAT(e.what(), ::testing::HasSubstr("the model on rank 1 differs from rank 0 at parameter 1 'fc1.bias'"));
      EXPECT_THAT(e.what(), ::testing::HasSubstr("rank 1 has 'fc1.bias Float[16] cpu frozen (requires_grad false)'"));
    }
  });
}

// Options that shape the collectives, different across ranks (rank 1 with other buckets and static_graph):
// refused at construction naming each, where they used to meet in a bare collective mismatch, or not at all.
TEST_F(DdpTest, OptionsThatDifferAcrossRanksAreNamedAtConstruction) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16));
  runDdpRanks(world, [&](comm::Communicator& comm) {
    DdpOptions options;
    if (comm.rank() == 1) {
      options.bucket_cap_mb = 0.001;
      options.static_graph = true;
    }
    try {
      DistributedDataParallel ddp(*models[comm.rank()], comm, options);
      ADD_FAILURE() << "options that differ went unnoticed";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(),
                  ::testing::HasSubstr("rank 1 was built with other DdpOptions than rank 0: bucket_cap_mb is "));
      EXPECT_THAT(e.what(), ::testing::HasSubstr(" on rank 0 and 0.001 on rank 1; static_graph is false on rank 0 and "
                                                 "true on rank 1"));
    }
  });
}

// Two objects on one communicator (a GAN's generator and discriminator) are said at construction: where a
// parameter may be unused on some ranks their collectives reorder across ranks. One after the other is fine.
TEST_F(DdpTest, ASecondObjectOnTheSameCommunicatorIsSaid) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> first, second;
  for (int r = 0; r < world; ++r) {
    first.push_back(std::make_shared<MlpImpl>(16));
    second.push_back(std::make_shared<MlpImpl>(8));
  }
  ::testing::internal::CaptureStderr();
  runDdpRanks(world, [&](comm::Communicator& comm) {
    { DistributedDataParallel alone(*first[comm.rank()], comm); }
    DistributedDataParallel g(*first[comm.rank()], comm);
    DistributedDataParallel d(*second[comm.rank()], comm);
  });
  const std::string said = ::testing::internal::GetCapturedStderr();
  const std::string warning = "1 other DistributedDataParallel object(s) use this communicator too";
  EXPECT_THAT(said, ::testing::HasSubstr(warning));
  EXPECT_EQ(said.find(warning), said.rfind(warning)) << "rank 0 says it, once: " << said;
}

// Two objects on one communicator, a parameter of the second used on rank 0 only: rank 1 holds that
// object's bucket back to finalize() and issues the first object's bucket before it, where rank 0 issues
// them the other way round. The buckets have one size, so only their tags tell them apart: a CommError
// naming both objects, where the sums used to mix silently (wrong gradients on both ranks).
#if RINGTRAIN_WITH_GLOO
TEST_F(DdpTest, TwoObjectsWhoseCollectivesReorderAcrossRanksAreNamedNotMixed) {
  const int world = 2;
  std::vector<std::shared_ptr<TwoHeadImpl>> g, d;
  for (int r = 0; r < world; ++r) {
    g.push_back(std::make_shared<TwoHeadImpl>());
    d.push_back(std::make_shared<TwoHeadImpl>());
  }
  std::vector<std::string> errors(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel dg(*g[rank], comm), dd(*d[rank], comm);
    try {
      for (int step = 0; step < 2; ++step) {
        dg.zeroGrad();
        dd.zeroGrad();
        d[rank]->forward(g[rank]->forward(inputs(step, 4), true), /*use_b=*/rank == 0).pow(2).mean().backward();
        dd.finalize();
        dg.finalize();
      }
    } catch (const CommError& e) {
      errors[rank] = e.what();
    }
  });
  for (int r = 0; r < world; ++r) {
    EXPECT_THAT(errors[r], HasSubstr("collective mismatch")) << "rank " << r;
    EXPECT_THAT(errors[r], HasSubstr("[DistributedDataParallel object 1, iteration 0 (mod 4096), bucket 0]"));
    EXPECT_THAT(errors[r], HasSubstr("[DistributedDataParallel object 2, iteration 0 (mod 4096), bucket 0]"));
  }
}
#endif

// A rank that ran one step fewer meets its peer's buckets with checkReplicas(): the check names
// finalize()'s own collectives and says that the ranks' step counts differ, where it used to blame an
// untagged collective of the caller's.
#if RINGTRAIN_WITH_GLOO
TEST_F(DdpTest, RanksThatRanADifferentNumberOfStepsAreToldSo) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>());
  std::vector<std::string> errors(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    try {
      for (int step = 0; step < (rank == 0 ? 2 : 1); ++step) {
        ddp.zeroGrad();
        torch::mse_loss(models[rank]->forward(inputs(step, 4)), targets(step, 4)).backward();
        ddp.finalize();
      }
      ddp.checkReplicas();
    } catch (const CommError& e) {
      errors[rank] = e.what();
    }
  });
  for (int r = 0; r < world; ++r) {
    EXPECT_THAT(errors[r], HasSubstr("collective mismatch")) << "rank " << r;
    EXPECT_THAT(errors[r], HasSubstr("iteration 1 (mod 4096), finalize()'s own collectives")) << errors[r];
    EXPECT_THAT(errors[r], HasSubstr("the ranks ran backward() and finalize() a different number of times"))
        << errors[r];
  }
}
#endif

// A module replaced or a parameter added after wrapping: its gradients were never synchronized, the replicas
// drifted apart and checkReplicas() (comparing the tensors held since construction) still agreed. The next
// finalize() names the parameter.
TEST_F(DdpTest, AParameterReplacedOrAddedAfterWrappingIsNamed) {
  const int world = 2;
  for (const bool replace : {true, false}) {
    std::vector<std::shared_ptr<MlpImpl>> models;
    for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>());
    std::vector<std::string> errors(world);
    runDdpRanks(world, [&](comm::Communicator& comm) {
      const int rank = comm.rank();
      MlpImpl& model = *models[rank];
      DistributedDataParallel ddp(model, comm);
      if (replace) {
        model.fc2 = model.replace_module("fc2", torch::nn::Linear(16, 4));
      } else {
        model.register_parameter("extra", torch::zeros({3}));
      }
      ddp.zeroGrad();
      torch::mse_loss(model.forward(inputs(rank, 4)), targets(rank, 4)).backward();
      try {
        ddp.finalize();
      } catch (const Error& e) {
        errors[rank] = e.what();
      }
    });
    for (int r = 0; r < world; ++r) {
      const std::string expected = replace ? "parameter 'fc2.weight' is another tensor than when this object was built"
                                           : "parameter 'extra' was not a parameter of the module when this object was "
                                             "built";
      EXPECT_THAT(errors[r], HasSubstr(expected)) << "rank " << r;
    }
  }
}

TEST_F(DdpTest, ASparseParameterNameThatIsNoParameterIsAConfigError) {
  auto model = std::make_shared<MlpImpl>(16);
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, kTimeout);
  DdpOptions options;
  options.sparse_parameters = {"fc1.wieght"};
  try {
    DistributedDataParallel ddp(*model, comm, options);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("sparse_parameters names 'fc1.wieght', which is not a parameter"));
  }
}

TEST_F(DdpTest, UnusedParameterIsAnErrorWhenDetectionIsOff) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16, true));
  std::vector<std::string> messages(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DdpOptions options;
    options.find_unused_parameters = false;
    DistributedDataParallel ddp(*models[rank], comm, options);
    torch::mse_loss(models[rank]->forward(inputs(0, 4)), targets(0, 4)).backward();
    try {
      ddp.finalize();
    } catch (const Error& e) {
      messages[rank] = e.what();
    }
  });
  for (const auto& m : messages) EXPECT_NE(m.find("unused.weight"), std::string::npos) << m;
}

// With detection off, a parameter unused on one rank only fails that rank, after this step's collectives:
// the other rank, which used every parameter, finishes its finalize() instead of waiting out the timeout.
TEST_F(DdpTest, AParameterUnusedOnOneRankWithDetectionOffFailsThatRankAlone) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16, true));
  std::vector<std::string> messages(world);
  const auto started = std::chrono::steady_clock::now();
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DdpOptions options;  // with the first iteration's rebuild, a broadcast from rank 0 after the buckets
    options.find_unused_parameters = false;
    DistributedDataParallel ddp(*models[rank], comm, options);
    auto out = models[rank]->forward(inputs(0, 4));
    if (rank == 1) out = models[rank]->unused->forward(out);
    out.pow(2).sum().backward();
    try {
      ddp.finalize();
    } catch (const Error& e) {
      messages[rank] = e.what();
    }
  });
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  EXPECT_EQ(messages[1], "");
  EXPECT_THAT(messages[0], ::testing::HasSubstr("parameters without a gradient this iteration on rank 0: unused.weight"));
}

// Only rank 1 leaves a parameter unused: nobody hangs, and the result is still the average.
TEST_F(DdpTest, ParameterUnusedOnOneRankOnly) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(16, true));
  std::vector<at::Tensor> grads(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    ddp.zeroGrad();
    auto out = models[rank]->forward(inputs(0, 4));
    if (rank == 0) out = models[rank]->unused->forward(out);
    out.pow(2).sum().backward();
    ddp.finalize();
    grads[rank] = models[rank]->unused->weight.grad().clone();
  });
  EXPECT_TRUE(torch::equal(grads[0], grads[1]));
  EXPECT_GT(grads[0].abs().sum().item<float>(), 0.0f);
}

TEST_F(DdpTest, MismatchedModelsNameTheParameter) {
  const int world = 3;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(r == 2 ? 17 : 16));
  std::vector<std::string> messages(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    try {
      DistributedDataParallel ddp(*models[rank], comm);
    } catch (const Error& e) {
      messages[rank] = e.what();
    }
  });
  for (const auto& m : messages) {
    EXPECT_NE(m.find("rank 2"), std::string::npos) << m;
    EXPECT_NE(m.find("'fc1.weight'"), std::string::npos) << m;
  }
}

// Gradients are written in place into the buckets: the grad's storage never changes, and small buckets are
// handed to the communicator while backward runs (before finalize).
TEST_F(DdpTest, GradientsAreBucketViewsAndBucketsLaunchDuringBackward) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(64));
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm, smallBuckets());
    ASSERT_GE(ddp.stats().buckets.size(), 3u);
    std::vector<const void*> pointers;
    for (auto& p : models[rank]->parameters()) pointers.push_back(p.grad().data_ptr());
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.1));
    for (int s = 0; s < 3; ++s) {
      sgd.zero_grad();
      const auto before = comm.nextSequence();
      torch::mse_loss(models[rank]->forward(inputs(s, 4)), targets(s, 4)).backward();
      EXPECT_EQ(comm.nextSequence() - before, ddp.stats().buckets.size()) << "all buckets launched during backward";
      ddp.finalize();
      sgd.step();
      auto params = models[rank]->parameters();
      for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i].grad().data_ptr(), pointers[i]);
    }
  });
}

// A collective holds its buffer's tensor while it is queued or running: a caller unwinding an error (DDP and
// the model destroyed while the communication thread still writes into a bucket) cannot free that memory
// under it. Rank 1 comes late, so rank 0's allreduce is still waiting when rank 0 lets go of everything.
TEST_F(DdpTest, ACollectiveKeepsItsTensorAliveUntilItEnds) {
  std::weak_ptr<const void> held;
  bool alive_while_waiting = false;
  runDdpRanks(2, [&](comm::Communicator& comm) {
    at::Tensor t = torch::full({1000}, static_cast<float>(comm.rank() + 1));
    if (comm.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    comm::Buffer buffer = asBuffer(t);
    comm::WorkPtr work = comm.allreduceAsync(buffer, comm::ReduceOp::kSum);
    if (comm.rank() == 0) {
      held = buffer.owner;
      buffer = {};
      t.reset();
      alive_while_waiting = !held.expired();
    }
    work->wait(std::chrono::seconds(20));
  });
  EXPECT_TRUE(alive_while_waiting) << "the queued collective did not hold its tensor";
}

// A hook runs in bucket order and may wait for its own work (it runs without DDP's lock; on CPU, where
// autograd runs every hook on one thread, that part is not observable here). One that throws fails the
// step where it ran and at every finalize() after, which used to skip its bucket and hand back an
// unreduced gradient.
class RecordingHook : public CommHook {
 public:
  explicit RecordingHook(int fail_at) : inner_(makeAllreduceHook()), fail_at_(fail_at) {}
  comm::WorkPtr run(comm::Communicator& comm, const at::Tensor& bucket) override {
    if (calls_++ == fail_at_) throw std::runtime_error("the hook refused bucket " + std::to_string(fail_at_));
    sizes.push_back(bucket.numel());
    comm::WorkPtr work = inner_->run(comm, bucket);
    work->wait(std::chrono::seconds(20));  // synchronous: fine outside DDP's lock
    return work;
  }
  std::string name() const override { return "recording"; }
  std::vector<int64_t> sizes;

 private:
  std::unique_ptr<CommHook> inner_;
  int fail_at_;
  int calls_ = 0;
};

TEST_F(DdpTest, AHookRunsInBucketOrderAndOneThatFailsFailsTheStep) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>(64));
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm, smallBuckets());
    const size_t buckets = ddp.stats().buckets.size();
    ASSERT_GE(buckets, 3u);
    {  // a synchronous hook: every bucket, in order, and the same average as the built-in hook
      auto hook = std::make_unique<RecordingHook>(-1);
      RecordingHook* seen = hook.get();
      ddp.setCommHook(std::move(hook));
      torch::mse_loss(models[rank]->forward(inputs(rank, 4)), targets(rank, 4)).backward();
      ddp.finalize();
      ASSERT_EQ(seen->sizes.size(), buckets);
      for (size_t b = 0; b < buckets; ++b) {
        EXPECT_EQ(seen->sizes[b], static_cast<int64_t>(ddp.stats().buckets[b].bytes / sizeof(float))) << b;
      }
      ddp.checkReplicas();
    }
    ddp.zeroGrad();
    ddp.setCommHook(std::make_unique<RecordingHook>(1));  // every rank refuses bucket 1
    EXPECT_THROW(torch::mse_loss(models[rank]->forward(inputs(rank, 4)), targets(rank, 4)).backward(),
                 std::exception);
    for (int again = 0; again < 2; ++again) {  // and again: the step stays failed
      EXPECT_THAT([&] { ddp.finalize(); }, ::testing::ThrowsMessage<std::exception>(
                                               ::testing::HasSubstr("the hook refused bucket 1")));
    }
  });
}

// A model whose registration order is not its use order is rebuilt once after the first iteration.
struct ReversedImpl : torch::nn::Module {
  ReversedImpl() {
    late = register_module("late", torch::nn::Linear(16, 4));
    early = register_module("early", torch::nn::Linear(8, 16));
  }
  torch::Tensor forward(const torch::Tensor& x) { return late(torch::relu(early(x))); }
  torch::nn::Linear late{nullptr}, early{nullptr};
};

TEST_F(DdpTest, BucketsRebuiltOnceInGradientOrder) {
  const int world = 2;
  std::vector<std::shared_ptr<ReversedImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<ReversedImpl>());
  torch::manual_seed(4);
  auto reference = std::make_shared<ReversedImpl>();
  copyParams(*reference, *models[0]);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DdpOptions options;
    options.bucket_cap_mb = 0.0001;
    options.first_bucket_mb = 0.0001;
    DistributedDataParallel ddp(*models[rank], comm, options);
    EXPECT_EQ(ddp.stats().buckets.front().parameters.front(), "early.bias");
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.1));
    for (int s = 0; s < 4; ++s) {
      sgd.zero_grad();
      torch::mse_loss(models[rank]->forward(inputs(s, 6).narrow(0, rank * 3, 3)),
                      targets(s, 6).narrow(0, rank * 3, 3)).backward();
      ddp.finalize();
      sgd.step();
    }
    EXPECT_EQ(ddp.stats().rebuilds, 1);
    EXPECT_EQ(ddp.stats().buckets.front().parameters.front().rfind("late.", 0), 0u)
        << ddp.stats().toString();
  });
  torch::optim::SGD sgd(reference->parameters(), torch::optim::SGDOptions(0.1));
  for (int s = 0; s < 4; ++s) {
    sgd.zero_grad();
    torch::mse_loss(reference->forward(inputs(s, 6)), targets(s, 6)).backward();
    sgd.step();
  }
  for (int r = 0; r < world; ++r) expectSameParams(*reference, *models[r], 1e-5, "rank " + std::to_string(r));
}

TEST_F(DdpTest, ReplicaCheckNamesTheDivergedParameter) {
  const int world = 2;
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>());
  std::vector<std::string> messages(world);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    ddp.checkReplicas();  // equal after construction
    if (rank == 1) {
      torch::NoGradGuard no_grad;
      models[rank]->fc2->bias[0].add_(1e-3);
    }
    try {
      ddp.checkReplicas();
    } catch (const Error& e) {
      messages[rank] = e.what();
    }
  });
  for (const auto& m : messages) {
    EXPECT_NE(m.find("'fc2.bias' (rank 1)"), std::string::npos) << m;
    EXPECT_EQ(m.find("fc1"), std::string::npos) << m;
  }
}

TEST_F(DdpTest, SecondBackwardWithoutFinalizeThrows) {
  auto model = std::make_shared<MlpImpl>();
  testing::ThreadGroup group(1);
  testing::ThreadCommunicator comm(group, 0, kTimeout);
  DistributedDataParallel ddp(*model, comm);
  torch::mse_loss(model->forward(inputs(0, 4)), targets(0, 4)).backward();
  EXPECT_THAT([&] { torch::mse_loss(model->forward(inputs(0, 4)), targets(0, 4)).backward(); },
              ThrowsMessage<std::exception>(HasSubstr("finalize()")));
}

// zero_grad with set_to_none semantics (LibTorch 2.x's default) stays correct.
TEST_F(DdpTest, DroppedGradientsAreCopiedBackIntoBuckets) {
  const int world = 2;
  torch::manual_seed(5);
  auto reference = std::make_shared<MlpImpl>();
  std::vector<std::shared_ptr<MlpImpl>> models;
  for (int r = 0; r < world; ++r) models.push_back(std::make_shared<MlpImpl>());
  copyParams(*reference, *models[0]);
  runDdpRanks(world, [&](comm::Communicator& comm) {
    const int rank = comm.rank();
    DistributedDataParallel ddp(*models[rank], comm);
    torch::optim::SGD sgd(models[rank]->parameters(), torch::optim::SGDOptions(0.1));
    for (int s = 0; s < 3; ++s) {
      for (auto& p : models[rank]->parameters()) p.mutable_grad() = at::Tensor();
      torch::mse_loss(models[rank]->forward(inputs(s, 8).narrow(0, rank * 4, 4)),
                      targets(s, 8).narrow(0, rank * 4, 4)).backward();
      ddp.finalize();
      sgd.step();
    }
  });
  torch::optim::SGD sgd(reference->parameters(), torch::optim::SGDOptions(0.1));
  for (int s = 0; s < 3; ++s) {
    sgd.zero_grad();
    torch::mse_loss(reference->forward(inputs(s, 8)), targets(s, 8)).backward();
    sgd.step();
  }
  for (int r = 0; r < world; ++r) expectSameParams(*reference, *models[r], 1e-5, "rank " + std::to_string(r));
}

TEST_F(DdpTest, OptionsFromConfig) {
  config::DdpOptions ddp;
  config::CommOptions comm;
  ddp.sparse_sync = "allgather";
  comm.timeout_s = 2.5;
  auto options = DdpOptions::fromConfig(ddp, comm);
  EXPECT_EQ(options.sparse_sync, SparseSync::kAllgather);
  EXPECT_EQ(options.timeout.count(), 2500);
  EXPECT_EQ(DdpOptions::fromConfig(config::DdpOptions{}, comm).sparse_sync, SparseSync::kAuto);
  ddp.sparse_sync = "nope";
  EXPECT_THROW(DdpOptions::fromConfig(ddp, comm), ConfigError);
  EXPECT_THROW(makeCommHook("int8"), ConfigError);
}

}  // namespace
}  // namespace ringtrain::ddp
