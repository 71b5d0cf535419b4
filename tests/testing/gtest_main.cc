#include <gtest/gtest.h>

#include "ringtrain/core/logging.h"

int main(int argc, char** argv) {
  ringtrain::log::init();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
