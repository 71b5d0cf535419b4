// What differs between two ranks' "key=value" settings lines, in words (DdpOptions, JobGroup's comm settings).
#include "core/settings_difference.h"

#include <gtest/gtest.h>

namespace ringtrain::detail {
namespace {

TEST(SettingsDifference, NamesEachKeyThatDiffersWithBothRanksValues) {
  EXPECT_EQ(settingsDifference("options: a=1 b=x c=true", 0, "options: a=1 b=y c=false", 3, ' '),
            "b is x on rank 0 and y on rank 3; c is true on rank 0 and false on rank 3");
  EXPECT_EQ(settingsDifference("k.a=1/k.b=2", 1, "k.a=1/k.b=2", 0, '/'), "");
  // Items without '=' are their own key; doubled separators are no items; the longer line's rest is not read.
  EXPECT_EQ(settingsDifference("tag  a=1", 0, "other a=1 b=2", 1, ' '), "tag is tag on rank 0 and other on rank 1");
}

}  // namespace
}  // namespace ringtrain::detail
