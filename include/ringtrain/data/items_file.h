// items.tsv, the file that names items: the trainer's categories, `ringtrain neighbors` and the server's
// answers all read it through forEachItemsRow(), so one file means the same thing to each.
//   First line: the column names, tab-separated. Known columns: `id` (the corpus token), `key` (another
//   name the token may have, such as a SKU), `name`, `category` (may be empty). `name` and one of `id` or
//   `key` must be there; each known column at most once; other columns are ignored. ringtrain writes
//   id<TAB>key<TAB>name<TAB>category.
//   Then one line per item with one field per column. Lines may end in CRLF; empty lines are skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ringtrain::data {

// One item line; the fields of columns the file lacks are empty. Valid during the callback only.
struct ItemsRow {
  std::string_view id;
  std::string_view key;
  std::string_view name;
  std::string_view category;
  int64_t line = 0;  // 1-based line number in the file
};

// Calls `each` for every item line of `path`, in file order. Throws DataError naming the file and line for
// a file that cannot be read, a header that does not name the columns as above (or, with `require_id`,
// lacks `id`: the trainer matches items to corpus tokens by it), or a line whose number of fields is not the
// header's.
void forEachItemsRow(const std::string& path, bool require_id, const std::function<void(const ItemsRow&)>& each);

// What items.tsv says about the tokens of an exported model, by the one rule the server and `neighbors`
// share: row r (its token) takes the first line whose id is the token, as the trainer reads the file. Only
// in a file whose ids name no token at all (an export whose tokens are the catalogue's own codes) does a
// row take the first line whose key is its token. A key that is not itself a token also finds the row its
// line named, so a catalogue's own codes (Online Retail's StockCode, 85123A) reach a model whose tokens
// are the corpus ids (3309); a key that is another row's token neither names nor finds that row.
struct TokenNames {
  std::vector<std::string> names;       // per row; "" where no line names it
  std::vector<std::string> categories;  // per row
  std::vector<std::string> keys;        // per row: the key of the line that named it, "" if none
  std::unordered_map<std::string, int64_t> row_of_key;  // keys that are not tokens -> row
  int64_t named = 0;                    // rows some line named
};
// `find` gives a token's row, or -1; `rows` is the model's row count.
TokenNames nameTokens(const std::string& path, int64_t rows, const std::function<int64_t(const std::string&)>& find);

// items.tsv beside a model file when it exists (for a model path that is a link: else beside the file it
// leads to), else "" (warning when something there is not a file): the server and `neighbors` read it by
// default.
std::string itemsBeside(const std::string& model_path);

}  // namespace ringtrain::data
