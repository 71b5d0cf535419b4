#include "ringtrain/data/items_file.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "core/input_file.h"
#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::data {
namespace {

using ::ringtrain::detail::quotable;

void splitTabs(std::string_view text, std::vector<std::string_view>& fields) {
  fields.clear();
  size_t start = 0;
  while (true) {
    const size_t tab = text.find('\t', start);
    fields.push_back(text.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) return;
    start = tab + 1;
  }
}

}  // namespace

void forEachItemsRow(const std::string& path, bool require_id, const std::function<void(const ItemsRow&)>& each) {
  ::ringtrain::detail::refuseDirectory(path, "an items file");
  // A pipe would hold the open until somebody writes it, and could be read once: every rank reads the file,
  // and a server again at each reload.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status)) {
    RT_THROW(DataError, path, ": is not a regular file (a pipe or device): every reader reads the items file "
             "itself, some of them more than once; write it to a file first");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) RT_THROW(DataError, path, ": cannot open items file: ", std::strerror(errno));
  std::string line;
  if (!std::getline(in, line)) {
    RT_THROW(DataError, path, ":1: empty items file (expected a header such as 'id<TAB>key<TAB>name<TAB>category')");
  }
  std::vector<std::string_view> fields;
  // A spreadsheet's byte order mark would stick to the first column's name and lose that column.
  const std::string header(::ringtrain::detail::withoutLineEnd(::ringtrain::detail::withoutByteOrderMark(line)));
  splitTabs(header, fields);
  const size_t columns = fields.size();
  int id = -1, key = -1, name = -1, category = -1;
  for (size_t c = 0; c < columns; ++c) {
    for (auto [column, slot] : {std::pair{"id", &id}, {"key", &key}, {"name", &name}, {"category", &category}}) {
      if (fields[c] != column) continue;
      if (*slot >= 0) RT_THROW(DataError, path, ":1: the column '", column, "' is named twice");
      *slot = static_cast<int>(c);
    }
  }
  if (name < 0 || (id < 0 && key < 0) || (require_id && id < 0)) {
    RT_THROW(DataError, path, ":1: expected a header naming the columns ", require_id ? "id" : "id and/or key",
             " and name, tab-separated (ringtrain writes 'id<TAB>key<TAB>name<TAB>category'), got '",
             quotable(header), "'");
  }
  // A column ringtrain does not read is fine (a price, a URL), but one that is nearly a known name
  // ("Category", "name ") loses what it holds without a word: said once, naming it.
  // (The known names are lower case without spaces: a name that folds to one and differs is near, not it.)
  static constexpr std::string_view kKnown[] = {"id", "key", "name", "category"};
  for (const std::string_view f : fields) {
    std::string folded;
    for (const char ch : f) {
      if (ch != ' ') folded += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    if (folded != f && std::find(std::begin(kKnown), std::end(kKnown), folded) != std::end(kKnown)) {
      warn("{}:1: the column '{}' is not read: ringtrain reads columns named exactly id, key, name and category "
           "(lower case, no spaces)", path, quotable(f));
    }
  }
  std::string column_names;  // for messages: "id key name category"
  for (const std::string_view f : fields) column_names += (column_names.empty() ? "" : " ") + quotable(f);
  const auto field = [&fields](int column) { return column < 0 ? std::string_view() : fields[column]; };
  ItemsRow row;
  row.line = 1;
  while (std::getline(in, line)) {
    ++row.line;
    const std::string_view text = ::ringtrain::detail::withoutLineEnd(line);
    if (text.empty()) continue;
    splitTabs(text, fields);
    if (fields.size() != columns) {
      RT_THROW(DataError, path, ":", row.line, ": expected ", columns, " tab-separated fields (", column_names,
               "), found ", fields.size());
    }
    row.id = field(id);
    row.key = field(key);
    row.name = field(name);
    row.category = field(category);
    each(row);
  }
  if (in.bad()) RT_THROW(DataError, path, ":", row.line + 1, ": read error");
}

TokenNames nameTokens(const std::string& path, int64_t rows, const std::function<int64_t(const std::string&)>& find) {
  TokenNames t;
  t.names.assign(static_cast<size_t>(rows), "");
  t.categories.assign(static_cast<size_t>(rows), "");
  t.keys.assign(static_cast<size_t>(rows), "");
  enum : uint8_t { kUnnamed, kByKey, kById };  // a later kind outranks an earlier
  std::vector<uint8_t> named_by(static_cast<size_t>(rows), kUnnamed);
  forEachItemsRow(path, /*require_id=*/false, [&](const ItemsRow& item) {
    const auto name = [&](int64_t row, uint8_t how) {
      if (row < 0 || row >= rows || named_by[static_cast<size_t>(row)] >= how) return;
      const auto r = static_cast<size_t>(row);
      t.names[r] = std::string(item.name);
      t.categories[r] = std::string(item.category);
      t.keys[r] = std::string(item.key);
      named_by[r] = how;
      // A line that names its id's row lends it its key, unless the key is a token itself; the first
      // such line keeps a key.
      if (how == kById && !item.key.empty() && find(t.keys[r]) < 0) t.row_of_key.emplace(t.keys[r], row);
    };
    if (!item.id.empty()) name(find(std::string(item.id)), kById);
    if (!item.key.empty()) name(find(std::string(item.key)), kByKey);
  });
  // A file whose ids are the tokens describes them by id, as the trainer reads it: there a key that happens
  // to be another item's token names nothing. Keys name tokens only in a file whose ids name none.
  if (std::find(named_by.begin(), named_by.end(), kById) != named_by.end()) {
    for (size_t r = 0; r < named_by.size(); ++r) {
      if (named_by[r] != kByKey) continue;
      t.names[r].clear();
      t.categories[r].clear();
      t.keys[r].clear();
      named_by[r] = kUnnamed;
    }
  }
  t.named = static_cast<int64_t>(std::count_if(named_by.begin(), named_by.end(), [](uint8_t how) { return how != kUnnamed; }));
  return t;
}

std::string itemsBeside(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // Beside the path as given, then (for a link such as current.vec -> run7/embeddings.txt, swapped to
  // publish a new export) beside the file it leads to, where the export put its names.
  std::vector<fs::path> candidates = {fs::path(model_path).parent_path() / "items.tsv"};
  if (fs::is_symlink(model_path, ec)) {
    const fs::path target = fs::canonical(model_path, ec);
    if (!ec) candidates.push_back(target.parent_path() / "items.tsv");
  }
  for (const fs::path& candidate : candidates) {
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  // Something there that is not a file (a directory, a link to nothing) would otherwise drop every name
  // without a word, and turn key queries into 404s.
  for (const fs::path& candidate : candidates) {
    if (fs::exists(fs::symlink_status(candidate, ec))) {
      warn("{} is not a readable file (a directory, or a link to nothing): the items keep their tokens and get "
           "no names; give --items", candidate.string());
    }
  }
  return "";
}

}  // namespace ringtrain::data
