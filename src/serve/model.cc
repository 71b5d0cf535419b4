// Model loader: strict validation, because the server uses it to decide whether a new export may replace
// the model that is serving.
#include "ringtrain/serve/model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/input_file.h"
#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/items_file.h"
#include "ringtrain/model/word2vec_io.h"

namespace ringtrain::serve {
namespace {

constexpr int64_t kMaxDim = 65536;

// items.tsv (ringtrain/data/items_file.h), by the rule neighbors shares: data::nameTokens.
void readItems(const std::string& path, Model& model) {
  data::TokenNames named = data::nameTokens(path, model.rows, [&](const std::string& t) { return model.find(t); });
  model.names = std::move(named.names);
  model.categories = std::move(named.categories);
  model.keys = std::move(named.keys);
  model.key_rows = std::move(named.row_of_key);
  model.items_path = path;
  if (named.named == 0 && model.rows > 0) {
    warn("serve: {} names none of the model's {} tokens (no id or key matches a token): answers carry no names",
         path, model.rows);
  } else {
    debug("serve: {} of {} model tokens named by {}", named.named, model.rows, path);
  }
}

// Whether `s` is well-formed UTF-8, by the corpus reader's decoding (core/input_file.h): no allocation,
// since a reload checks every token of the catalog.
bool validUtf8(std::string_view s) {
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    if (::ringtrain::detail::nextCodePoint(s, i, cp) != ::ringtrain::detail::Utf8Error::kNone) return false;
  }
  return true;
}

// Tokens that are not valid UTF-8 (a Latin-1 file) are answered with U+FFFD in their place, so a client
// cannot name them in a JSON query: said once at load, with the first one.
void warnOfInvalidUtf8Tokens(const std::string& path, const std::vector<std::string>& tokens) {
  int64_t invalid = 0, first = -1;
  for (size_t r = 0; r < tokens.size(); ++r) {
    if (!validUtf8(tokens[r]) && invalid++ == 0) first = static_cast<int64_t>(r);
  }
  if (invalid == 0) return;
  warn("serve: {} has {} token(s) that are not valid UTF-8 (the first, vector {}: '{}'): answers show them with "
       "U+FFFD, and only a GET with %-escaped bytes can name them", path, invalid, first + 1,
       ::ringtrain::detail::quotable(tokens[static_cast<size_t>(first)]));
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
                      ",\"key\":" + jsonString(m.keys[r]) + ",\"name\":" + jsonString(m.names[r]) + ",\"score\":";
    m.json_tokens += token;
    m.json_entry_at.push_back(m.json_entries.size());
    m.json_token_at.push_back(m.json_tokens.size());
  }
}

}  // namespace

std::shared_ptr<Model> loadModel(const std::string& path, const std::string& items_path) {
  ::ringtrain::detail::refuseDirectory(path, "a model file");
  model::WordVectors read = model::readWord2Vec(path, kMaxDim);
  auto model = std::make_shared<Model>();
  model->path = path;
  model->rows = static_cast<int64_t>(read.tokens.size());
  model->dim = read.dim;
  const int64_t n = model->rows, dim = model->dim;
  // Unit rows: every scorer ranks by cosine.
  int64_t zero_rows = 0;
  for (int64_t row = 0; row < n; ++row) {
    float* v = read.values.data() + row * dim;
    double norm2 = 0.0;
    for (int64_t d = 0; d < dim; ++d) norm2 += static_cast<double>(v[d]) * v[d];
    if (norm2 > 0.0) {  // divided in double: 1 / norm overflows float32 for rows as small as 1e-39
      const double norm = std::sqrt(norm2);
      for (int64_t d = 0; d < dim; ++d) v[d] = static_cast<float>(v[d] / norm);
    } else {
      ++zero_rows;
    }
  }
  model->index = std::move(read.index);
  model->tokens = std::move(read.tokens);
  if (zero_rows > 0) warn("serve: {} has {} all-zero vectors (they score 0 against everything)", path, zero_rows);
  warnOfInvalidUtf8Tokens(path, model->tokens);
  if (!items_path.empty()) {
    readItems(items_path, *model);
  } else {
    model->names.assign(n, "");
    model->categories.assign(n, "");
    model->keys.assign(n, "");
  }
  model->packed = PackedCatalog(std::move(read.values), dim);
  renderJsonFragments(*model);
  return model;
}

}  // namespace ringtrain::serve
