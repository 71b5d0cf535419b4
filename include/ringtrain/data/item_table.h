// Names and categories of items, read from an optional items.tsv beside the corpus (the format is in
// ringtrain/data/items_file.h; here the `id` column is required: it is the token used in the corpus). Rows are attached to vocabulary ids; rows for tokens the corpus
// never uses (or that min_count dropped) are ignored. Stored compactly (one arena for all text), so
// 10^7 items cost about their file size.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringtrain::data {

class Vocabulary;

class ItemTable {
 public:
  ItemTable() = default;
  // Reads `path` for the ids of `vocab`; throws DataError naming file and line for a malformed row.
  static ItemTable load(const std::string& path, const Vocabulary& vocab);

  bool empty() const { return rows_ == 0; }
  int64_t rowsMatched() const { return rows_; }
  // Per vocabulary id; empty views for ids without a row.
  std::string_view key(int32_t id) const { return field(id, 0); }
  std::string_view name(int32_t id) const { return field(id, 1); }
  std::string_view category(int32_t id) const;
  // Dense category index (order of first appearance in the file), -1 when none/empty.
  int32_t categoryId(int32_t id) const { return category_.empty() ? -1 : category_[id]; }
  int32_t numCategories() const { return static_cast<int32_t>(category_names_.size()); }
  const std::string& categoryName(int32_t c) const { return category_names_[c]; }

 private:
  std::string_view field(int32_t id, int which) const;

  int64_t rows_ = 0;
  std::string arena_;
  std::vector<int64_t> offsets_;  // per id: key begin, name begin, name end (3 entries); empty: no items
  std::vector<int32_t> category_;
  std::vector<std::string> category_names_;
};

}  // namespace ringtrain::data
