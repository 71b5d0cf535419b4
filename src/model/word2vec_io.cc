#include "ringtrain/model/word2vec_io.h"

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <ATen/ATen.h>

#include "core/input_file.h"
#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/file_target.h"
#include "ringtrain/model/word2vec_limits.h"

namespace ringtrain::model {
namespace {

bool badToken(const std::string& token) {
  if (token.empty()) return true;
  return std::any_of(token.begin(), token.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

// The fields of a line: runs of characters other than space and tab.
void splitFields(std::string_view s, std::vector<std::string_view>& out) {
  out.clear();
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    const size_t begin = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
    if (i > begin) out.push_back(s.substr(begin, i - begin));
  }
}

bool parseInteger(std::string_view text, int64_t& value) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  return ec == std::errc() && ptr == end;
}

// A finite float32 value. Subnormals are read as they are (%.9g writes them so), and a decimal too small for
// float32 (1e-50, as a float64 writer may leave) rounds to its nearest float, 0; NaN, infinities and values
// beyond float32's range are refused.
bool parseValue(std::string_view text, float& value) {
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.remove_prefix(1);  // from_chars takes no '+'
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ptr != end) return false;
  if (ec == std::errc::result_out_of_range) {
    const std::string copy(text);
    char* stop = nullptr;
    const double wide = std::strtod(copy.c_str(), &stop);
    if (std::fabs(wide) >= 1.0) return false;  // overflow
    value = static_cast<float>(wide);
    return true;
  }
  return ec == std::errc() && std::isfinite(value);
}

}  // namespace

int64_t WordVectors::find(const std::string& token) const {
  const auto it = index.find(token);
  return it == index.end() ? -1 : it->second;
}

void writeWord2Vec(const std::string& requested, const std::vector<std::string>& tokens, const at::Tensor& vectors) {
  const std::string path = atomicWriteTarget(requested);
  RT_CHECK(vectors.dim() == 2, "vectors must be [N, D]");
  RT_CHECK_EQ(static_cast<int64_t>(tokens.size()), vectors.size(0), "one token per vector");
  const at::Tensor v = vectors.detach().to(at::kCPU).to(at::kFloat).contiguous();
  const int64_t n = v.size(0), d = v.size(1);
  if (n < 1 || d < 1) RT_THROW(DataError, "cannot export ", n, " x ", d, " vectors to ", path, ": the format needs N, D >= 1");
  const float* pv = v.data_ptr<float>();
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  AtomicFile file(path, "export");
  std::string text = std::to_string(n) + " " + std::to_string(d) + "\n";
  char buf[32];
  for (int64_t i = 0; i < n; ++i) {
    const std::string& token = tokens[static_cast<size_t>(i)];
    if (badToken(token)) {
      RT_THROW(DataError, "cannot export item ", i, ": token '", token, "' is empty or contains whitespace");
    }
    text += token;
    for (int64_t j = 0; j < d; ++j) {
      std::snprintf(buf, sizeof(buf), " %.9g", static_cast<double>(pv[i * d + j]));
      text += buf;
    }
    text.push_back('\n');
    if (text.size() >= (1u << 20)) file.write(std::exchange(text, {}));  // in pieces of about a MiB
  }
  file.write(text);
  file.commit();
}

WordVectors readWord2Vec(const std::string& path, int64_t max_dim) {
  ::ringtrain::detail::refuseDirectory(path, "a word2vec file");
  std::ifstream in(path, std::ios::binary);
  if (!in) RT_THROW(DataError, path, ": cannot open: ", std::strerror(errno));
  WordVectors out;
  std::string line;
  if (!std::getline(in, line)) RT_THROW(DataError, path, ":1: empty file (expected a header 'N D')");
  std::vector<std::string_view> f;
  int64_t n = 0, d = 0;
  const std::string_view header =
      ::ringtrain::detail::withoutLineEnd(::ringtrain::detail::withoutByteOrderMark(line));  // an editor's BOM
  splitFields(header, f);
  if (f.size() != 2 || !parseInteger(f[0], n) || !parseInteger(f[1], d)) {
    RT_THROW(DataError, path, ":1: expected a header 'N D' (two integers), got '",
             ::ringtrain::detail::quotable(header), "'");
  }
  if (n < 1 || d < 1) RT_THROW(DataError, path, ":1: header 'N D' out of range: N = ", n, ", D = ", d, " (each >= 1)");
  if (max_dim > 0 && d > max_dim) RT_THROW(DataError, path, ":1: D = ", d, " is above the limit of ", max_dim, " here");
  if (d > kMaxWord2VecValues || n > kMaxWord2VecValues / d) {
    RT_THROW(DataError, path, ":1: N x D = ", n, " x ", d, " is too large");
  }
  // Grown row by row within what the file can hold: a header announcing more rows than the file has is
  // found at its end, not by an allocation of the announced size.
  const int64_t most_values = word2vecValuesFileCanHold(path);
  out.dim = d;
  out.tokens.reserve(static_cast<size_t>(std::min(n, most_values)));
  out.values.reserve(static_cast<size_t>(std::min(n * d, most_values)));
  std::vector<int64_t> row_line;  // each row's line, for duplicates
  row_line.reserve(out.tokens.capacity());
  out.index.reserve(out.tokens.capacity());
  int64_t line_no = 1, rows = 0;
  while (std::getline(in, line)) {
    ++line_no;
    splitFields(::ringtrain::detail::withoutLineEnd(line), f);
    if (f.empty()) continue;  // blank lines (a trailing newline) are harmless
    if (rows == n) RT_THROW(DataError, path, ":", line_no, ": more vectors than the header's N = ", n);
    if (static_cast<int64_t>(f.size()) != d + 1) {
      // Counted alike (values after the token), so that a header's wrong D reads as such.
      RT_THROW(DataError, path, ":", line_no, ": expected a token and ", d, " values (the header's D), found ",
               f.size() - 1, " after the token");
    }
    for (int64_t j = 1; j <= d; ++j) {
      float value = 0;
      if (!parseValue(f[static_cast<size_t>(j)], value)) {
        RT_THROW(DataError, path, ":", line_no, ": value ", j, " of '", ::ringtrain::detail::quotable(f[0]),
                 "' is not a finite float32 number: '", ::ringtrain::detail::quotable(f[static_cast<size_t>(j)]), "'");
      }
      out.values.push_back(value);
    }
    const auto [it, fresh] = out.index.emplace(std::string(f[0]), rows);
    if (!fresh) {
      RT_THROW(DataError, path, ":", line_no, ": duplicate token '", ::ringtrain::detail::quotable(f[0]),
               "' (first on line ", row_line[static_cast<size_t>(it->second)], ")");
    }
    out.tokens.emplace_back(f[0]);
    row_line.push_back(line_no);
    ++rows;
  }
  if (in.bad()) RT_THROW(DataError, path, ": read error");
  if (rows != n) RT_THROW(DataError, path, ":", line_no, ": header promises ", n, " vectors, file has ", rows);
  return out;
}

std::vector<Neighbor> nearestNeighbors(const WordVectors& vectors, int64_t index, int k) {
  const auto n = static_cast<int64_t>(vectors.tokens.size());
  RT_CHECK(index >= 0 && index < n, "item index out of range");
  // In double, and unclamped: float32 vectors as small as 1e-30 have squared norms float32 cannot hold, and
  // a floor on the norm would call them orthogonal to everything. A zero vector is similar to nothing (0).
  auto norm = [&](int64_t i) {
    double s = 0;
    for (int64_t j = 0; j < vectors.dim; ++j) s += double(vectors.row(i)[j]) * vectors.row(i)[j];
    return std::sqrt(s);
  };
  const double qn = norm(index);
  using Entry = std::pair<float, int64_t>;  // min-heap of the best k
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  for (int64_t i = 0; i < n; ++i) {
    if (i == index) continue;
    double dot = 0;
    for (int64_t j = 0; j < vectors.dim; ++j) dot += double(vectors.row(index)[j]) * vectors.row(i)[j];
    const double in = norm(i);
    const auto sim = static_cast<float>(qn > 0 && in > 0 ? dot / qn / in : 0.0);
    if (static_cast<int>(heap.size()) < k) {
      heap.emplace(sim, i);
    } else if (k > 0 && sim > heap.top().first) {
      heap.pop();
      heap.emplace(sim, i);
    }
  }
  std::vector<Neighbor> out;
  while (!heap.empty()) {
    out.push_back({heap.top().second, heap.top().first});
    heap.pop();
  }
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace ringtrain::model
