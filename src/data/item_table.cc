#include "ringtrain/data/item_table.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <unordered_map>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/vocabulary.h"

namespace ringtrain::data {

ItemTable ItemTable::load(const std::string& path, const Vocabulary& vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) RT_THROW(DataError, path, ": cannot open items file: ", std::strerror(errno));
  ItemTable t;
  const auto n = static_cast<size_t>(vocab.size());
  t.offsets_.assign(3 * n, 0);
  t.category_.assign(n, -1);
  std::unordered_map<std::string, int32_t> category_index;
  std::string line;
  int64_t line_no = 0;
  int64_t unknown = 0, duplicates = 0;
  std::vector<uint8_t> seen(n, 0);
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string_view fields[4];
    int nf = 0;
    size_t start = 0;
    while (true) {
      const size_t tab = line.find('\t', start);
      if (nf == 4) {
        RT_THROW(DataError, path, ":", line_no, ": expected 4 tab-separated fields (id key name category), got more");
      }
      fields[nf++] = std::string_view(line).substr(start, tab == std::string::npos ? std::string::npos : tab - start);
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    if (line_no == 1) {
      if (nf < 3 || fields[0] != "id" || fields[1] != "key" || fields[2] != "name" || (nf == 4 && fields[3] != "category")) {
        RT_THROW(DataError, path, ":1: expected the header 'id<TAB>key<TAB>name<TAB>category', got '", line, "'");
      }
      continue;
    }
    if (line.empty()) continue;
    if (nf < 3) {
      RT_THROW(DataError, path, ":", line_no, ": expected 4 tab-separated fields (id key name category), got ", nf);
    }
    if (fields[0].empty()) RT_THROW(DataError, path, ":", line_no, ": empty id");
    const int32_t id = vocab.id(fields[0]);
    if (id < 0) {
      ++unknown;
      continue;
    }
    if (seen[id]) {
      ++duplicates;
      continue;
    }
    seen[id] = 1;
    ++t.rows_;
    t.offsets_[3 * id] = static_cast<int64_t>(t.arena_.size());
    t.arena_.append(fields[1]);
    t.offsets_[3 * id + 1] = static_cast<int64_t>(t.arena_.size());
    t.arena_.append(fields[2]);
    t.offsets_[3 * id + 2] = static_cast<int64_t>(t.arena_.size());
    if (nf == 4 && !fields[3].empty()) {
      auto [it, inserted] = category_index.emplace(std::string(fields[3]), static_cast<int32_t>(t.category_names_.size()));
      if (inserted) t.category_names_.emplace_back(fields[3]);
      t.category_[id] = it->second;
    }
  }
  if (in.bad()) RT_THROW(DataError, path, ":", line_no + 1, ": read error");
  if (line_no == 0) RT_THROW(DataError, path, ":1: empty items file (expected a header)");
  if (duplicates > 0) warn("{}: {} duplicate id row(s) ignored (the first row of each id wins)", path, duplicates);
  debug("{}: {} items matched, {} rows for ids not in the vocabulary", path, t.rows_, unknown);
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
