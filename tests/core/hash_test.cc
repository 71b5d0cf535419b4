#include "ringtrain/core/hash.h"

#include <string>

#include <gtest/gtest.h>

namespace ringtrain {
namespace {

uint64_t hashOf(const std::string& s) { return fnv1a64(s.data(), s.size()); }

TEST(Fnv1a64, MatchesThePublishedTestVectors) {
  EXPECT_EQ(hashOf(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(hashOf("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(hashOf("foobar"), 0x85944171f73967e8ull);
}

TEST(Fnv1a64, HashingInPiecesEqualsHashingInOneGo) {
  const std::string text = "ringtrain sparse rows";
  const uint64_t head = fnv1a64(text.data(), 9);
  EXPECT_EQ(fnv1a64(text.data() + 9, text.size() - 9, head), hashOf(text));
  EXPECT_NE(hashOf(text), hashOf("ringtrain sparse rowz"));
}

}  // namespace
}  // namespace ringtrain
