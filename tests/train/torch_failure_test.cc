// A LibTorch error in a person's words: an allocation a machine cannot give names the settings that size it.
#include "train/torch_failure.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

namespace ringtrain::train {
namespace {

using ::testing::HasSubstr;

TEST(TorchFailure, AnAllocationTooLargeNamesTheSettingsThatSizeIt) {
  try {
    at::Tensor t = at::empty({int64_t{1} << 48}, at::TensorOptions().dtype(at::kByte));  // 256 TiB
    ADD_FAILURE() << "allocated " << t.numel() << " bytes";
  } catch (const c10::Error& e) {
    const std::string said = describeTorchFailure(e);
    EXPECT_THAT(said, HasSubstr("out of memory"));
    EXPECT_THAT(said, HasSubstr("data.batch_size, data.negatives or model.dim"));
    EXPECT_THAT(said, ::testing::Not(HasSubstr("Exception raised from")));  // no backtrace
  }
}

TEST(TorchFailure, OtherErrorsAreInternalWithTheirFirstLine) {
  try {
    at::Tensor a = at::zeros({2, 3});
    at::Tensor b = at::zeros({4, 5});
    at::Tensor c = at::mm(a, b);
    ADD_FAILURE() << "multiplied " << c.sizes();
  } catch (const c10::Error& e) {
    const std::string said = describeTorchFailure(e);
    EXPECT_EQ(said.rfind("internal error (LibTorch): ", 0), 0u) << said;
  }
}

}  // namespace
}  // namespace ringtrain::train
