#include "ringtrain/model/word2vec_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>
#include <unordered_map>

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

}  // namespace

int64_t WordVectors::find(const std::string& token) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == token) return static_cast<int64_t>(i);
  }
  return -1;
}

void writeWord2Vec(const std::string& requested, const std::vector<std::string>& tokens, const at::Tensor& vectors) {
  const std::string path = atomicWriteTarget(requested);
  RT_CHECK(vectors.dim() == 2, "vectors must be [N, D]");
  RT_CHECK_EQ(static_cast<int64_t>(tokens.size()), vectors.size(0), "one token per vector");
  const at::Tensor v = vectors.detach().to(at::kCPU).to(at::kFloat).contiguous();
  const int64_t n = v.size(0), d = v.size(1);
  const float* pv = v.data_ptr<float>();
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string tmp = (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) RT_THROW(DataError, "cannot create ", tmp, ": ", std::strerror(errno));
  bool ok = std::fprintf(f, "%lld %lld\n", static_cast<long long>(n), static_cast<long long>(d)) > 0;
  char buf[32];
  for (int64_t i = 0; i < n && ok; ++i) {
    const std::string& token = tokens[static_cast<size_t>(i)];
    if (badToken(token)) {
      std::fclose(f);
      std::remove(tmp.c_str());
      RT_THROW(DataError, "cannot export item ", i, ": token '", token, "' is empty or contains whitespace");
    }
    std::string line = token;
    for (int64_t j = 0; j < d; ++j) {
      std::snprintf(buf, sizeof(buf), " %.9g", static_cast<double>(pv[i * d + j]));
      line += buf;
    }
    line.push_back('\n');
    ok = std::fwrite(line.data(), 1, line.size(), f) == line.size();
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    RT_THROW(DataError, "cannot write ", tmp, ": ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(tmp.c_str());
    RT_THROW(DataError, "cannot rename ", tmp, " to ", path, ": ", std::strerror(rename_err));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

WordVectors readWord2Vec(const std::string& path) {
  ::ringtrain::detail::refuseDirectory(path, "a word2vec file");
  std::ifstream in(path);
  if (!in) RT_THROW(DataError, path, ": cannot open: ", std::strerror(errno));
  WordVectors out;
  std::string line;
  if (!std::getline(in, line)) RT_THROW(DataError, path, ":1: empty file (expected 'N D')");
  long long n = -1, d = -1;
  {
    std::istringstream header(line);
    std::string extra;
    if (!(header >> n >> d) || (header >> extra) || n < 0 || d <= 0) {
      RT_THROW(DataError, path, ":1: bad header '", ::ringtrain::detail::quotable(line), "' (expected 'N D')");
    }
  }
  if (d > kMaxWord2VecValues || n > kMaxWord2VecValues / d) {
    RT_THROW(DataError, path, ":1: N x D = ", n, " x ", d, " is too large");
  }
  const long long most_values = word2vecValuesFileCanHold(path);
  out.dim = d;
  out.tokens.reserve(static_cast<size_t>(std::min(n, most_values)));
  out.values.reserve(static_cast<size_t>(std::min(n * d, most_values)));
  std::unordered_map<std::string, int64_t> seen;
  for (long long i = 0; i < n; ++i) {
    const long long line_no = i + 2;
    if (!std::getline(in, line)) RT_THROW(DataError, path, ":", line_no, ": file ends after ", i, " of ", n, " vectors");
    const char* p = line.c_str();
    while (*p == ' ') ++p;
    const char* start = p;
    while (*p && !std::isspace(static_cast<unsigned char>(*p))) ++p;
    if (p == start) RT_THROW(DataError, path, ":", line_no, ": missing token");
    std::string token(start, p);
    for (long long j = 0; j < d; ++j) {
      char* end = nullptr;
      errno = 0;
      const float value = std::strtof(p, &end);
      if (end == p || errno == ERANGE || !std::isfinite(value)) {
        RT_THROW(DataError, path, ":", line_no, ": value ", j + 1, " of ", d, " missing or not a finite number");
      }
      out.values.push_back(value);
      p = end;
    }
    while (*p && std::isspace(static_cast<unsigned char>(*p))) ++p;
    if (*p) RT_THROW(DataError, path, ":", line_no, ": more than ", d, " values");
    if (!seen.emplace(token, i).second) RT_THROW(DataError, path, ":", line_no, ": duplicate token '", token, "'");
    out.tokens.push_back(std::move(token));
  }
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      RT_THROW(DataError, path, ": more lines than the ", n, " the header announces");
    }
  }
  return out;
}

std::vector<Neighbor> nearestNeighbors(const WordVectors& vectors, int64_t index, int k) {
  const auto n = static_cast<int64_t>(vectors.tokens.size());
  RT_CHECK(index >= 0 && index < n, "item index out of range");
  auto norm = [&](int64_t i) {
    double s = 0;
    for (int64_t j = 0; j < vectors.dim; ++j) s += double(vectors.row(i)[j]) * vectors.row(i)[j];
    return std::sqrt(s);
  };
  const double qn = std::max(norm(index), 1e-12);
  using Entry = std::pair<float, int64_t>;  // min-heap of the best k
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  for (int64_t i = 0; i < n; ++i) {
    if (i == index) continue;
    double dot = 0;
    for (int64_t j = 0; j < vectors.dim; ++j) dot += double(vectors.row(index)[j]) * vectors.row(i)[j];
    const auto sim = static_cast<float>(dot / (qn * std::max(norm(i), 1e-12)));
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
