#include "ringtrain/serve/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ringtrain/core/error.h"
#include "ringtrain/data/items_file.h"
#include "serve/serve_fixtures.h"
#include "testing/captured_log.h"
#include "testing/command.h"

namespace ringtrain::serve {
namespace {

using testing::writeText;

class ModelLoadTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = ringtrain::testing::makeTempDir("serve_model"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // Loads text that must be refused; returns the DataError message.
  std::string refused(const std::string& text) {
    writeText(path("m.vec"), text);
    try {
      loadModel(path("m.vec"), "");
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "accepted:\n" << text;
    return "";
  }

  std::string dir_;
};

TEST_F(ModelLoadTest, LoadsAndNormalizesRowsWithNames) {
  writeText(path("m.vec"), "3 2\na 3 4\nb 0 2\r\nc 0 0\n\n");
  writeText(path("items.tsv"), "id\tkey\tname\tcategory\n0\ta\tApple\tfruit\n1\tb\tBread\tbakery\n");
  EXPECT_EQ(data::itemsBeside(path("m.vec")), path("items.tsv"));
  const auto m = loadModel(path("m.vec"), data::itemsBeside(path("m.vec")));
  ASSERT_EQ(m->rows, 3);
  ASSERT_EQ(m->dim, 2);
  EXPECT_EQ(m->find("b"), 1);
  EXPECT_EQ(m->find("zz"), -1);
  EXPECT_FLOAT_EQ(m->row(0)[0], 0.6f);
  EXPECT_FLOAT_EQ(m->row(0)[1], 0.8f);
  EXPECT_FLOAT_EQ(m->row(1)[1], 1.0f);
  EXPECT_FLOAT_EQ(m->row(2)[0], 0.0f);  // a zero vector stays zero
  EXPECT_EQ(m->names[0], "Apple");
  EXPECT_EQ(m->categories[1], "bakery");
  EXPECT_EQ(m->names[2], "");
  EXPECT_EQ(m->packed.rows(), 3);
}

// A link published as the current export finds the names beside the file it leads to; something named
// items.tsv that is not a file gives no names, and says so.
TEST_F(ModelLoadTest, ItemsBesideALinkedModelAndBesideNothingUsable) {
  namespace fs = std::filesystem;
  fs::create_directories(path("run7"));
  fs::create_directories(path("live"));
  writeText(path("run7/embeddings.txt"), "1 2\na 1 0\n");
  writeText(path("run7/items.tsv"), "id\tkey\tname\tcategory\n0\ta\tApple\tfruit\n");
  fs::create_symlink(path("run7/embeddings.txt"), path("live/current.vec"));
  EXPECT_EQ(data::itemsBeside(path("live/current.vec")), fs::canonical(path("run7/items.tsv")).string());
  writeText(path("live/items.tsv"), "id\tkey\tname\tcategory\n");
  EXPECT_EQ(data::itemsBeside(path("live/current.vec")), path("live/items.tsv")) << "beside the link comes first";

  ringtrain::testing::CapturedLog logged;
  fs::create_directories(path("odd/items.tsv"));
  writeText(path("odd/m.vec"), "1 2\na 1 0\n");
  const std::string found = data::itemsBeside(path("odd/m.vec"));
  EXPECT_EQ(found, "");
  EXPECT_THAT(logged.text(), ::testing::HasSubstr("odd/items.tsv is not a readable file"));
}

// The JSON rendered at load: each row's entry (completed by a score and '}') and its token parse back to
// the model's text, escapes included; a row without a name gets "".
TEST_F(ModelLoadTest, RendersEachRowsJsonOnceAtLoad) {
  writeText(path("m.vec"), "3 2\na\"b 1 0\nc\\d 0 1\ne 1 1\n");
  writeText(path("items.tsv"), "key\tname\tcategory\na\"b\tQuote \"x\"\tc/1\nc\\d\tBack\\slash\tc2\n");
  const auto m = loadModel(path("m.vec"), path("items.tsv"));
  ASSERT_EQ(m->json_entry_at.size(), 4u);
  for (int64_t r = 0; r < 3; ++r) {
    const auto entry = nlohmann::json::parse(std::string(m->entryJson(r)) + "0.5}");
    EXPECT_EQ(entry.at("item").get<std::string>(), m->tokens[r]);
    EXPECT_EQ(entry.at("name").get<std::string>(), m->names[r]);
    EXPECT_EQ(entry.at("category").get<std::string>(), m->categories[r]);
    EXPECT_EQ(entry.at("key").get<std::string>(), m->keys[r]);
    EXPECT_EQ(entry.at("score").get<double>(), 0.5);
    EXPECT_EQ(nlohmann::json::parse(m->tokenJson(r)).get<std::string>(), m->tokens[r]);
  }
  EXPECT_EQ(m->names[0], "Quote \"x\"");
  EXPECT_EQ(m->names[2], "");
}

// Tokens that are corpus ids (Online Retail's) are also found by the key their line gives (the StockCode a
// person knows); a key that is itself a token means that token, and the first line keeps a key.
TEST_F(ModelLoadTest, ARowIsFoundByItsTokenOrByTheKeyOfTheLineThatNamedIt) {
  writeText(path("m.vec"), "4 2\n3309 1 0\n17 0 1\n85099B 1 1\n8 1 2\n");
  writeText(path("items.tsv"),
            "id\tkey\tname\tcategory\n3309\t85123A\tHeart holder\t\n17\t85099B\tJumbo bag\t\n8\t85123A\tOther\t\n");
  const auto m = loadModel(path("m.vec"), path("items.tsv"));
  EXPECT_EQ(m->findItem("3309"), 0);
  EXPECT_EQ(m->findItem("85123A"), 0) << "the first line with the key keeps it";
  EXPECT_EQ(m->findItem("85099B"), 2) << "a token wins over a key";
  EXPECT_EQ(m->findItem("nope"), -1);
  EXPECT_EQ(m->keys[0], "85123A");
  EXPECT_EQ(m->keys[3], "85123A");
  EXPECT_EQ(m->names[3], "Other");
  const auto entry = nlohmann::json::parse(std::string(m->entryJson(0)) + "1}");
  EXPECT_EQ(entry.at("key").get<std::string>(), "85123A");
}

// A token takes the first line whose id it is, wherever the lines are in the file; a key names tokens only
// in a file whose ids name none.
TEST_F(ModelLoadTest, AnIdMatchBeatsAKeyMatchAndTheFirstLineWins) {
  writeText(path("m.vec"), "4 1\nb 1\nc 2\nd 3\ne 4\n");
  writeText(path("items.tsv"),
            "id\tkey\tname\tcategory\n"
            "y\tb\tB by key\tkeys\n"
            "b\tx\tB by id\tids\n"
            "c\tw\tC by id\tids\n"
            "c\tv\tC by a later id\tids\n"
            "q\te\tE by key\tkeys\n"
            "r\te\tE by a later key\tkeys\n");
  const auto m = loadModel(path("m.vec"), path("items.tsv"));
  EXPECT_EQ(m->names[0], "B by id") << "the trainer reads the same file by id";
  EXPECT_EQ(m->categories[0], "ids");
  EXPECT_EQ(m->names[1], "C by id");
  EXPECT_EQ(m->names[2], "");
  EXPECT_EQ(m->names[3], "") << "ids name tokens in this file: a key names nothing, as for the trainer";
  // A file whose ids name no token (the tokens are the catalogue's codes) names them by key.
  writeText(path("keys.tsv"), "id\tkey\tname\tcategory\n901\tb\tB by key\tkeys\n902\tb\tB again\tkeys\n");
  const auto by_key = loadModel(path("m.vec"), path("keys.tsv"));
  EXPECT_EQ(by_key->names[0], "B by key");
  EXPECT_EQ(by_key->names[1], "");
}

// Numeric codes that overlap numeric ids: a line whose key is another item's token renames nothing, and
// each item keeps its own line's key.
TEST_F(ModelLoadTest, AKeyThatIsAnotherItemsTokenDoesNotRenameIt) {
  writeText(path("m.vec"), "3 1\n1 1\n5 2\n7 3\n");
  writeText(path("items.tsv"), "id\tkey\tname\tcategory\n1\t5\tOne\tc1\n5\tK5\tFive\tc5\n7\tK7\tSeven\tc7\n");
  const auto m = loadModel(path("m.vec"), path("items.tsv"));
  EXPECT_EQ(m->names[1], "Five");
  EXPECT_EQ(m->categories[1], "c5");
  EXPECT_EQ(m->findItem("5"), 1) << "the token, not the key of line 1";
  EXPECT_EQ(m->findItem("K5"), 1);
  EXPECT_EQ(m->findItem("K7"), 2);
  // Without a line of its own, item 5 is not named by line 1's key either (the trainer would not).
  writeText(path("few.tsv"), "id\tkey\tname\tcategory\n1\t5\tOne\tc1\n");
  const auto few = loadModel(path("m.vec"), path("few.tsv"));
  EXPECT_EQ(few->names[0], "One");
  EXPECT_EQ(few->names[1], "");
  EXPECT_EQ(few->categories[1], "");
}

TEST_F(ModelLoadTest, ItemsMatchByIdWhenTokensAreIds) {
  writeText(path("m.vec"), "2 1\n17 1\n18 2\n");
  writeText(path("items.tsv"), "id\tname\n17\tSeventeen\n");
  const auto m = loadModel(path("m.vec"), path("items.tsv"));
  EXPECT_EQ(m->names[0], "Seventeen");
  EXPECT_EQ(m->names[1], "");
}

TEST_F(ModelLoadTest, RefusesBrokenFilesNamingFileAndLine) {
  const std::string f = path("m.vec");
  EXPECT_NE(refused("").find(f + ":1: empty"), std::string::npos);
  EXPECT_NE(refused("3\n").find(f + ":1: expected a header"), std::string::npos);
  EXPECT_NE(refused("x 2\n").find(f + ":1:"), std::string::npos);
  EXPECT_NE(refused("0 2\n").find(f + ":1: header"), std::string::npos);
  EXPECT_NE(refused("2 -1\n").find(f + ":1: header"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\nb 1\n").find(f + ":3: expected a token and 2 values"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\nb 1 2 3\n").find(f + ":3:"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\nb 1 x\n").find(f + ":3: value 2 of 'b'"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\nb 1 nan\n").find(f + ":3:"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\nb inf 1\n").find(f + ":3:"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\nb 1 2e99\n").find(f + ":3:"), std::string::npos);
  EXPECT_NE(refused("2 2\na 1 2\na 3 4\n").find(f + ":3: duplicate token 'a' (first on line 2)"), std::string::npos);
  EXPECT_NE(refused("3 2\na 1 2\nb 3 4\n").find("header promises 3 vectors, file has 2"), std::string::npos);
  EXPECT_NE(refused("1 2\na 1 2\nb 3 4\n").find(f + ":3: more vectors"), std::string::npos);
  // Headers promising more than memory holds: refused, or read to where the file ends, never allocated.
  EXPECT_NE(refused("2 999999999999\na 1\n").find(f + ":1: D = 999999999999 is above the limit of 65536 here"), std::string::npos);
  std::string wide = "1 70000\na";
  for (int i = 0; i < 70000; ++i) wide += " 1";
  EXPECT_NE(refused(wide + "\n").find(f + ":1: D = 70000 is above the limit of 65536 here"), std::string::npos);
  EXPECT_NE(refused("99999999999 3\na 1 2 3\n").find(f + ":1: N x D = 99999999999 x 3 is too large"),
            std::string::npos);
  EXPECT_NE(refused("100000000 100\na 1\n").find(f + ":2: expected a token and 100 values"), std::string::npos);
  EXPECT_NE(refused("1000000000 1\na 1\n").find("header promises 1000000000 vectors, file has 1"),
            std::string::npos);
  EXPECT_THROW(loadModel(path("missing.vec"), ""), DataError);
}

TEST_F(ModelLoadTest, TrailingSpaceAndTabsAreAccepted) {
  writeText(path("m.vec"), "1 2\na\t1  2 \n");
  EXPECT_EQ(loadModel(path("m.vec"), "")->rows, 1);
}

// Rows are scaled to unit length in double: 1 / norm of a row near 1e-40 overflows float32 (inf, then NaN
// scores).
TEST_F(ModelLoadTest, TinyRowsNormaliseToUnitLength) {
  writeText(path("m.vec"), "2 2\na 3e-40 4e-40\nb 3e-30 -4e-30\n");
  const auto m = loadModel(path("m.vec"), "");
  EXPECT_NEAR(m->row(0)[0], 0.6f, 1e-3);
  EXPECT_NEAR(m->row(0)[1], 0.8f, 1e-3);
  EXPECT_FLOAT_EQ(m->row(1)[0], 0.6f);
  EXPECT_FLOAT_EQ(m->row(1)[1], -0.8f);
}

TEST_F(ModelLoadTest, RefusesBrokenItemsFile) {
  writeText(path("m.vec"), "1 1\na 1\n");
  writeText(path("items.tsv"), "id\tkey\tname\n0\ta\n");
  try {
    loadModel(path("m.vec"), path("items.tsv"));
    FAIL() << "accepted a short items line";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(path("items.tsv") + ":2: expected 3 tab-separated fields"), std::string::npos)
        << e.what();
  }
  writeText(path("items.tsv"), "a\tb\n");
  EXPECT_THROW(loadModel(path("m.vec"), path("items.tsv")), DataError);
  // A directory where a file is wanted is named as one, not as "an empty file".
  EXPECT_THAT([&] { loadModel(path("m.vec"), dir_); },
              ::testing::ThrowsMessage<DataError>(::testing::HasSubstr(": is a directory, not an items file")));
  EXPECT_THAT([&] { loadModel(dir_, ""); },
              ::testing::ThrowsMessage<DataError>(::testing::HasSubstr(": is a directory, not a model file")));
}

}  // namespace
}  // namespace ringtrain::serve
