// Tables on huge pages: their own 2 MiB aligned mapping, advised to the kernel, gone with the tensor; small
// tables and huge_pages false stay on LibTorch's allocator; optimizer state follows its table; the model
// computes the same either way.
#include "model/table_memory.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ringtrain/config/config.h"
#include "ringtrain/model/sgns_model.h"
#include "ringtrain/train/optimizer.h"
#include "testing/proc_files.h"

namespace ringtrain::model {
namespace {

using testing::smapsEntryAt;

std::string readFile(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

constexpr int64_t kRows = 40000, kDim = 64;  // 10 MB of float: over kHugePageMinBytes

TEST(TableMemory, ALargeTableGetsItsOwnAlignedMappingAdvisedForHugePages) {
  if (!kTablesMayMap) GTEST_SKIP() << "AddressSanitizer build: tables stay on malloc";
  if (readFile("/sys/kernel/mm/transparent_hugepage/enabled").empty()) GTEST_SKIP() << "this kernel has no THP";
  at::Tensor t = emptyTable({kRows, kDim}, at::kFloat, true);
  ASSERT_TRUE(onHugePageTable(t));
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{kRows, kDim}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % kHugePageBytes, 0u);
  t.fill_(1.5f);
  EXPECT_EQ(t.sum().item<double>(), 1.5 * kRows * kDim);
  const std::string entry = smapsEntryAt(t.data_ptr());
  ASSERT_FALSE(entry.empty()) << "no mapping starts at the table";
  // The advice shows as the VMA flag "hg" (MADV_HUGEPAGE), whatever the kernel then had free to give.
  EXPECT_NE(entry.find("VmFlags:"), std::string::npos) << entry;
  EXPECT_NE(entry.substr(entry.find("VmFlags:")).find(" hg"), std::string::npos) << entry;
  const void* where = t.data_ptr();
  t = at::Tensor();
  EXPECT_EQ(smapsEntryAt(where), "") << "the mapping outlived its table";
}

TEST(TableMemory, SmallTablesAndHugePagesOffStayOnLibTorchsAllocator) {
  EXPECT_FALSE(onHugePageTable(emptyTable({kRows, kDim}, at::kFloat, false)));
  EXPECT_FALSE(onHugePageTable(emptyTable({1000, kDim}, at::kFloat, true)));  // 256 KB
  EXPECT_FALSE(onHugePageTable(at::zeros({kRows, kDim})));
  EXPECT_FALSE(onHugePageTable(at::Tensor()));
}

TEST(TableMemory, ZerosLikeATableAreZerosOfTheSameKind) {
  if (!kTablesMayMap) GTEST_SKIP() << "AddressSanitizer build: tables stay on malloc";
  const at::Tensor table = emptyTable({kRows, kDim}, at::kFloat, true).fill_(3.0f);
  const at::Tensor zeros = zerosLikeTable(table);
  EXPECT_TRUE(onHugePageTable(zeros));
  EXPECT_EQ(zeros.sizes(), table.sizes());
  EXPECT_EQ(zeros.abs().sum().item<double>(), 0.0);
  EXPECT_NE(zeros.data_ptr(), table.data_ptr());
  const at::Tensor plain = zerosLikeTable(at::ones({kRows, kDim}));
  EXPECT_FALSE(onHugePageTable(plain));
  EXPECT_EQ(plain.abs().sum().item<double>(), 0.0);
}

SgnsOptions tables(bool huge_pages) {
  SgnsOptions o;
  o.vocab_size = kRows;
  o.dim = static_cast<int>(kDim);
  o.tower_hidden = 16;
  o.zero_output_init = false;
  o.huge_pages = huge_pages;
  return o;
}

// Where the tables live changes nothing computed: the same initial values, the same gradients and the same
// Adagrad step, bit for bit; the optimizer's per-row state sits where its table does.
TEST(TableMemory, AModelOnHugePagesComputesTheSameAsOneWithout) {
  SgnsModel on(tables(true), 7), off(tables(false), 7);
  ASSERT_EQ(onHugePageTable(on.named_parameters()["input_embedding"]), kTablesMayMap);
  ASSERT_EQ(onHugePageTable(on.named_parameters()["output_embedding"]), kTablesMayMap);
  ASSERT_FALSE(onHugePageTable(off.named_parameters()["input_embedding"]));
  config::OptimOptions adagrad;
  adagrad.name = "adagrad";
  adagrad.lr = 0.1;
  const auto optimizerOf = [&](SgnsModel& m) {
    train::NamedTensors params;
    for (const auto& p : m.named_parameters()) params.emplace_back(p.key(), p.value());
    return train::makeOptimizer(params, adagrad);
  };
  auto opt_on = optimizerOf(on), opt_off = optimizerOf(off);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int step = 0; step < 3; ++step) {
    const at::Tensor center = at::randint(0, kRows, {256}, gen), context = at::randint(0, kRows, {256}, gen);
    const at::Tensor negatives = at::randint(0, kRows, {256, 5}, gen);
    for (auto* pair : {&on, &off}) pair->forward(center, context, negatives).backward();
    opt_on->step();
    opt_off->step();
    opt_on->zeroGrad();
    opt_off->zeroGrad();
  }
  for (const auto& p : on.named_parameters()) {
    EXPECT_TRUE(at::equal(p.value(), off.named_parameters()[p.key()])) << p.key();
  }
  std::vector<std::string> state_on_huge_pages;
  opt_on->placeState({"input_embedding", "output_embedding"}, [&](const std::string& name, const at::Tensor& t) {
    if (onHugePageTable(t)) state_on_huge_pages.push_back(name);
    return t;
  });
  if (kTablesMayMap) {
    EXPECT_EQ(state_on_huge_pages, (std::vector<std::string>{"input_embedding.sum", "output_embedding.sum"}));
  }
  const train::TensorDict state = opt_on->stateDict();
  EXPECT_TRUE(at::equal(state.at("input_embedding.sum"), opt_off->stateDict().at("input_embedding.sum")));
}

}  // namespace
}  // namespace ringtrain::model
