// A trained embedding model as the server holds it: immutable once loaded, shared read-only by every
// request thread through std::shared_ptr<const Model> (a hot swap replaces the pointer, never the data).
//
// The file is the word2vec text format the trainer exports: a header line "N D", then N lines
// "token v1 .. vD" (space separated). An optional items.tsv (tab separated, header naming the columns
// id, key, name, category in any order) gives display names; a model token matches an item's id, or
// else its key (data::nameTokens).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringtrain/serve/scorer.h"

namespace ringtrain::serve {

class AnnIndex;  // approximate nearest-neighbour index (FAISS), src/serve/

struct Model {
  uint64_t version = 0;  // assigned by the server, increases with every successful (re)load
  std::string path;
  std::string items_path;  // empty when no names were loaded
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<std::string> tokens;
  std::vector<std::string> names;       // "" where items.tsv has none
  std::vector<std::string> categories;  // "" where items.tsv has none
  std::vector<std::string> keys;        // the key of the items.tsv line that named the row, or ""
  std::unordered_map<std::string, int64_t> key_rows;  // keys that are not tokens -> row (data::nameTokens)
  std::unordered_map<std::string, int64_t> index;  // token -> row
  // The rows x dim vectors, each row L2-normalized (an all-zero row stays zero), held once: row-major in
  // packed.rowFp32 (see row()), and in the exact scorer's layout.
  PackedCatalog packed;
  std::shared_ptr<const AnnIndex> ann;  // set when serve.index is faiss
  // What an answer says about each row, rendered as JSON once at load instead of per request: the entry
  // up to its score, `{"category":"..","item":"..","key":"..","name":"..","score":`, and the token as a JSON
  // string. Text that is not valid UTF-8 is rendered with U+FFFD in its place.
  std::string json_entries, json_tokens;
  std::vector<uint64_t> json_entry_at, json_token_at;  // rows + 1 offsets into them

  // Row of a token, or -1.
  int64_t find(const std::string& token) const {
    const auto it = index.find(token);
    return it == index.end() ? -1 : it->second;
  }
  // Row of what a request names: a token, else a key from items.tsv (a token wins), or -1.
  int64_t findItem(const std::string& text) const {
    const int64_t row = find(text);
    if (row >= 0) return row;
    const auto it = key_rows.find(text);
    return it == key_rows.end() ? -1 : it->second;
  }
  // Needs a catalog that adopted the rows (loadModel's does): see PackedCatalog::hasRows.
  const float* row(int64_t r) const { return packed.rowFp32(r); }
  std::string_view entryJson(int64_t r) const {
    return std::string_view(json_entries).substr(json_entry_at[r], json_entry_at[r + 1] - json_entry_at[r]);
  }
  std::string_view tokenJson(int64_t r) const {
    return std::string_view(json_tokens).substr(json_token_at[r], json_token_at[r + 1] - json_token_at[r]);
  }
};

// Reads and validates a model file and (when items_path is not empty) its items.tsv. Any problem throws
// DataError naming the file and line: a bad header, a wrong number of values, a non-number, NaN/inf,
// a duplicate token, too few or too many vectors. The returned model has version 0 and no ANN index; its
// JSON fragments are rendered.
std::shared_ptr<Model> loadModel(const std::string& path, const std::string& items_path);


}  // namespace ringtrain::serve
