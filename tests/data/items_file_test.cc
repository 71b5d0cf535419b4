#include "ringtrain/data/items_file.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "data_testing.h"
#include "ringtrain/core/error.h"
#include "testing/captured_log.h"

namespace ringtrain::data {
namespace {

using ::testing::HasSubstr;
using testing_helpers::writeFile;

struct Read {
  std::vector<std::vector<std::string>> rows;  // id, key, name, category, line
  std::string error;
};

Read readItems(const std::string& text, bool require_id = false) {
  const std::string dir = ringtrain::testing::makeTempDir("rt_items");
  const std::string path = writeFile(dir, "items.tsv", text);
  Read r;
  try {
    forEachItemsRow(path, require_id, [&r](const ItemsRow& row) {
      r.rows.push_back({std::string(row.id), std::string(row.key), std::string(row.name), std::string(row.category),
                        std::to_string(row.line)});
    });
  } catch (const DataError& e) {
    r.error = e.what();
  }
  std::filesystem::remove_all(dir);
  return r;
}

TEST(ItemsFile, ColumnsAreFoundByNameInAnyOrderAndOthersAreIgnored) {
  const Read r = readItems("name\tprice\tkey\r\nApple\t3\tA1\r\n\r\nBread\t2\tB7\r\n");
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0], (std::vector<std::string>{"", "A1", "Apple", "", "2"}));
  EXPECT_EQ(r.rows[1], (std::vector<std::string>{"", "B7", "Bread", "", "4"}));  // the empty line counts
}

// A column that is nearly a known one ("Category", "category ") is not read, and said; an unrelated one
// (a price) is not.
TEST(ItemsFile, AColumnNamedAlmostAsAKnownOneIsSaid) {
  testing::CapturedLog logged;
  const Read r = readItems("id\tname\tCategory\tprice\n0\tApple\tfruit\t3\n", true);
  const Read spaced = readItems("id\tname\tcategory \n0\tApple\tfruit\n", true);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.rows[0][3], "") << "read as the category";
  EXPECT_THAT(logged.text(), HasSubstr("the column 'Category' is not read"));
  EXPECT_THAT(logged.text(), HasSubstr("the column 'category ' is not read"));
  EXPECT_THAT(logged.text(), ::testing::Not(HasSubstr("'price'")));
}

TEST(ItemsFile, TheWrittenHeaderReadsEveryColumnAndAnEmptyCategory) {
  const Read r = readItems("id\tkey\tname\tcategory\n0\tx\tNamed\t\n1\ty\tOther\tfruit\n", true);
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0], (std::vector<std::string>{"0", "x", "Named", "", "2"}));
  EXPECT_EQ(r.rows[1], (std::vector<std::string>{"1", "y", "Other", "fruit", "3"}));
}

// A spreadsheet's byte order mark used to stick to 'id', which then named no column: every id was lost.
TEST(ItemsFile, AByteOrderMarkBeforeTheHeaderIsSkipped) {
  const Read r = readItems("\xEF\xBB\xBFid\tkey\tname\tcategory\n3\tA\tOne\tc\n", true);
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0], (std::vector<std::string>{"3", "A", "One", "c", "2"}));
}

TEST(ItemsFile, BadHeadersAndLinesAreRefusedNamingFileAndLine) {
  EXPECT_THAT(readItems("").error, HasSubstr("items.tsv:1: empty items file"));
  EXPECT_THAT(readItems("id\tkey\n0\ta\n").error, HasSubstr("items.tsv:1: expected a header naming the columns"));
  EXPECT_THAT(readItems("name\tcategory\nA\tx\n").error, HasSubstr("items.tsv:1: expected a header"));
  EXPECT_THAT(readItems("key\tname\na\tA\n", true).error,
              HasSubstr("items.tsv:1: expected a header naming the columns id and name"));
  EXPECT_THAT(readItems("id\tname\tid\n1\tA\t2\n").error, HasSubstr("items.tsv:1: the column 'id' is named twice"));
  EXPECT_THAT(readItems("id\tkey\tname\tcategory\n0\ta\tA\tx\n1\tb\n").error,
              HasSubstr("items.tsv:3: expected 4 tab-separated fields (id key name category), found 2"));
  EXPECT_THAT(readItems("id\tname\n0\tA\tsurplus\n").error, HasSubstr("items.tsv:2: expected 2 tab-separated fields"));
  // A binary file's bytes are quoted as escapes, not written to the terminal.
  const std::string binary = readItems(std::string("\x7f" "ELF\x02\x01\x01\0\0", 9) + "\n").error;
  EXPECT_THAT(binary, HasSubstr("got '\\x7fELF\\x02\\x01\\x01\\x00\\x00'"));
  EXPECT_THAT(readItems("id\tname\n", true).error, "");  // a header alone: no items, no error
}

}  // namespace
}  // namespace ringtrain::data
