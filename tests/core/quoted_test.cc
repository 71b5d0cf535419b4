// Text from users' files, made safe for a terminal (src/core/quoted.h).
#include "core/quoted.h"

#include <gtest/gtest.h>

#include <string>

namespace ringtrain::detail {
namespace {

TEST(Quoted, PrintableKeepsValidUtf8AndWritesEveryOtherByteAsHex) {
  EXPECT_EQ(printable("Red apple"), "Red apple");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8d\x8e"), "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8d\x8e");
  EXPECT_EQ(printable("caf\xe9 au lait"), "caf\\xe9 au lait");         // Latin-1
  EXPECT_EQ(printable("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");        // an escape sequence, DEL
  EXPECT_EQ(printable("a\xc2\x85" "b"), "a\\xc2\\x85b");               // U+0085, a C1 control
  EXPECT_EQ(printable("ab\xe2\x82"), "ab\\xe2\\x82");                  // a sequence cut short
  EXPECT_EQ(printable("\xe2\x82" "A"), "\\xe2\\x82A");                 // broken off by ASCII, which stays
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");             // a surrogate
  EXPECT_EQ(printable(""), "");
}

TEST(Quoted, QuotableWritesAllButPrintableAsciiAsHexAndCutsLongText) {
  EXPECT_EQ(quotable("a\tb\xc3\xa9"), "a\\x09b\\xc3\\xa9");
  EXPECT_EQ(quotable(std::string(100, 'x'), 4), "xxxx...");
}

}  // namespace
}  // namespace ringtrain::detail
