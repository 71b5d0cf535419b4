// Model loader: strict validation, because the server uses it to decide whether a new export may replace
// the model that is serving.
#include "ringtrain/serve/model.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/input_file.h"
#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/items_file.h"
#include "ringtrain/model/word2vec_limits.h"

namespace ringtrain::serve {
namespace {

constexpr int64_t kMaxDim = 65536;

std::string_view trimLineEnd(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// Splits on runs of spaces/tabs.
std::vector<std::string_view> fields(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    const size_t start = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

template <typename T>
bool parseNumber(std::string_view text, T& value) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  return ec == std::errc() && ptr == end;
}

// items.tsv (ringtrain/data/items_file.h). A model token takes the first line whose key is the token, or
// else the first line whose id is.
void readItems(const std::string& path, Model& model) {
  model.names.assign(model.rows, "");
  model.categories.assign(model.rows, "");
  enum : uint8_t { kUnnamed, kById, kByKey };
  std::vector<uint8_t> named_by(static_cast<size_t>(model.rows), kUnnamed);
  data::forEachItemsRow(path, /*require_id=*/false, [&](const data::ItemsRow& item) {
    const auto name = [&](int64_t row, uint8_t how) {
      if (row < 0 || named_by[row] >= how) return;
      model.names[row] = std::string(item.name);
      model.categories[row] = std::string(item.category);
      named_by[row] = how;
    };
    if (!item.key.empty()) name(model.find(std::string(item.key)), kByKey);
    if (!item.id.empty()) name(model.find(std::string(item.id)), kById);
  });
  const int64_t named = std::count_if(named_by.begin(), named_by.end(), [](uint8_t how) { return how != kUnnamed; });
  model.items_path = path;
  debug("serve: {} of {} model tokens named by {}", named, model.rows, path);
}

// A JSON string literal for `text`; invalid UTF-8 becomes U+FFFD rather than an error at every answer.
std::string jsonString(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void renderJsonFragments(Model& m) {
  m.json_entry_at.assign(1, 0);
  m.json_token_at.assign(1, 0);
  m.json_entries.reserve(static_cast<size_t>(m.rows) * 64);
  m.json_tokens.reserve(static_cast<size_t>(m.rows) * 12);
  for (int64_t r = 0; r < m.rows; ++r) {
    const std::string token = jsonString(m.tokens[r]);
    m.json_entries += "{\"category\":" + jsonString(m.categories[r]) + ",\"item\":" + token +
                      ",\"name\":" + jsonString(m.names[r]) + ",\"score\":";
    m.json_tokens += token;
    m.json_entry_at.push_back(m.json_entries.size());
    m.json_token_at.push_back(m.json_tokens.size());
  }
}

}  // namespace

std::string defaultItemsPath(const std::string& model_path) {
  const auto candidate = std::filesystem::path(model_path).parent_path() / "items.tsv";
  std::error_code ec;
  return std::filesystem::is_regular_file(candidate, ec) ? candidate.string() : std::string();
}

std::shared_ptr<Model> loadModel(const std::string& path, const std::string& items_path) {
  ::ringtrain::detail::refuseDirectory(path, "a model file");
  std::ifstream in(path, std::ios::binary);
  if (!in) RT_THROW(DataError, path, ": cannot open model file");
  auto model = std::make_shared<Model>();
  model->path = path;
  std::string line;
  if (!std::getline(in, line)) RT_THROW(DataError, path, ":1: empty model file (expected a header 'N D')");
  {
    const auto f = fields(trimLineEnd(line));
    if (f.size() != 2 || !parseNumber(f[0], model->rows) || !parseNumber(f[1], model->dim)) {
      RT_THROW(DataError, path, ":1: expected a header 'N D' (two integers), got '",
               ::ringtrain::detail::quotable(trimLineEnd(line)), "'");
    }
    if (model->rows < 1 || model->dim < 1 || model->dim > kMaxDim) {
      RT_THROW(DataError, path, ":1: header 'N D' out of range: N = ", model->rows, " (>= 1), D = ", model->dim,
               " (1..", kMaxDim, ")");
    }
  }
  const int64_t n = model->rows, dim = model->dim;
  if (n > model::kMaxWord2VecValues / dim) RT_THROW(DataError, path, ":1: N x D = ", n, " x ", dim, " is too large");
  // Grown row by row within what the file can hold: a header announcing more rows than the file has is
  // found at its end, not by an allocation of the announced size.
  const int64_t most_values = model::word2vecValuesFileCanHold(path);
  std::vector<float> vectors;
  vectors.reserve(static_cast<size_t>(std::min(n * dim, most_values)));
  model->tokens.reserve(static_cast<size_t>(std::min(n, most_values)));
  model->index.reserve(static_cast<size_t>(std::min(n, most_values)));
  int64_t line_no = 1, row = 0, zero_rows = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string_view text = trimLineEnd(line);
    const auto f = fields(text);
    if (f.empty()) continue;  // blank lines (a trailing newline) are harmless
    if (row == n) RT_THROW(DataError, path, ":", line_no, ": more vectors than the header's N = ", n);
    if (static_cast<int64_t>(f.size()) != dim + 1) {
      RT_THROW(DataError, path, ":", line_no, ": expected a token and ", dim, " values, found ", f.size(), " fields");
    }
    vectors.resize(static_cast<size_t>((row + 1) * dim));
    float* v = vectors.data() + row * dim;
    double norm2 = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      if (!parseNumber(f[d + 1], v[d]) || !std::isfinite(v[d])) {
        RT_THROW(DataError, path, ":", line_no, ": value ", d + 1, " of '", f[0], "' is not a finite number: '", f[d + 1], "'");
      }
      norm2 += static_cast<double>(v[d]) * v[d];
    }
    if (norm2 > 0.0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
      for (int64_t d = 0; d < dim; ++d) v[d] *= inv;
    } else {
      ++zero_rows;
    }
    std::string token(f[0]);
    if (!model->index.emplace(token, row).second) {
      RT_THROW(DataError, path, ":", line_no, ": duplicate token '", token, "' (first on line ",
               model->index[token] + 2, ")");
    }
    model->tokens.push_back(std::move(token));
    ++row;
  }
  if (in.bad()) RT_THROW(DataError, path, ": read error");
  if (row != n) RT_THROW(DataError, path, ":", line_no, ": header promises ", n, " vectors, file has ", row);
  if (zero_rows > 0) warn("serve: {} has {} all-zero vectors (they score 0 against everything)", path, zero_rows);
  if (!items_path.empty()) {
    readItems(items_path, *model);
  } else {
    model->names.assign(n, "");
    model->categories.assign(n, "");
  }
  model->packed = PackedCatalog(std::move(vectors), dim);
  renderJsonFragments(*model);
  return model;
}

}  // namespace ringtrain::serve
