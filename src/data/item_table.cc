#include "ringtrain/data/item_table.h"

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/items_file.h"
#include "ringtrain/data/vocabulary.h"

namespace ringtrain::data {

ItemTable ItemTable::load(const std::string& path, const Vocabulary& vocab) {
  ItemTable t;
  const auto n = static_cast<size_t>(vocab.size());
  t.offsets_.assign(3 * n, 0);
  t.category_.assign(n, -1);
  std::unordered_map<std::string, int32_t> category_index;
  int64_t unknown = 0, duplicates = 0;
  std::vector<uint8_t> seen(n, 0);
  forEachItemsRow(path, /*require_id=*/true, [&](const ItemsRow& row) {
    if (row.id.empty()) RT_THROW(DataError, path, ":", row.line, ": empty id");
    const int32_t id = vocab.id(row.id);
    if (id < 0) {
      ++unknown;
      return;
    }
    if (seen[id]) {
      ++duplicates;
      return;
    }
    seen[id] = 1;
    ++t.rows_;
    t.offsets_[3 * id] = static_cast<int64_t>(t.arena_.size());
    t.arena_.append(row.key);
    t.offsets_[3 * id + 1] = static_cast<int64_t>(t.arena_.size());
    t.arena_.append(row.name);
    t.offsets_[3 * id + 2] = static_cast<int64_t>(t.arena_.size());
    if (!row.category.empty()) {
      auto [it, inserted] = category_index.emplace(std::string(row.category), static_cast<int32_t>(t.category_names_.size()));
      if (inserted) t.category_names_.emplace_back(row.category);
      t.category_[id] = it->second;
    }
  });
  if (duplicates > 0) warn("{}: {} duplicate id row(s) ignored (the first row of each id wins)", path, duplicates);
  // An items file of another catalog (or ids written differently) names nothing: no names, no category
  // agreement, and without this no word of why.
  if (t.rows_ == 0 && unknown > 0) {
    warn("{}: none of its {} rows has an id of the corpus's items: no names or categories; is it this corpus's "
         "items file (its id column holds the corpus's tokens)?", path, unknown);
  } else if (unknown > t.rows_) {  // a full catalog beside a corpus of its best sellers, or a high min_count
    info("{}: {} rows name items that are not in the trained vocabulary (not in the corpus, or below "
         "data.min_count), against {} that are", path, unknown, t.rows_);
  } else {
    debug("{}: {} items matched, {} rows for ids not in the vocabulary", path, t.rows_, unknown);
  }
  if (t.category_names_.empty()) t.category_.clear();
  return t;
}

std::string_view ItemTable::field(int32_t id, int which) const {
  if (offsets_.empty()) return {};
  const int64_t b = offsets_[3 * static_cast<size_t>(id) + which];
  const int64_t e = offsets_[3 * static_cast<size_t>(id) + which + 1];
  return std::string_view(arena_.data() + b, static_cast<size_t>(e - b));
}

std::string_view ItemTable::category(int32_t id) const {
  const int32_t c = categoryId(id);
  return c < 0 ? std::string_view() : std::string_view(category_names_[c]);
}

}  // namespace ringtrain::data
