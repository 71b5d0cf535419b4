// The word2vec text format, ringtrain's export format for item vectors:
//   N D
//   token v1 v2 ... vD        (N lines; values printed with %.9g, so float32 round-trips exactly)
// Tokens contain no whitespace. Writing is atomic (temp file in the same directory, fsync, rename).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ringtrain::model {

struct WordVectors {
  std::vector<std::string> tokens;
  int64_t dim = 0;
  std::vector<float> values;  // row-major [tokens.size(), dim]
  std::unordered_map<std::string, int64_t> index;  // token -> row; readWord2Vec() fills it, find() reads it
  const float* row(size_t i) const { return values.data() + i * dim; }
  // Index of a token, or -1.
  int64_t find(const std::string& token) const;
};

// vectors: [tokens.size(), D] float tensor (any device), N and D >= 1. Throws DataError on a bad token, an
// empty table or I/O failure.
void writeWord2Vec(const std::string& path, const std::vector<std::string>& tokens, const at::Tensor& vectors);
// The one reader of the format (`ringtrain neighbors`, the server, the tests). Fields are separated by spaces
// or tabs; a line may end in CRLF; blank lines are skipped. The header needs N, D >= 1. Values are finite
// float32 numbers: subnormals are kept, a decimal below float32's range reads as 0, NaN, infinities and
// overflowing values are refused. Throws DataError naming the file and line: a bad header, a line without
// exactly a token and D values, a bad value, a duplicate token, fewer or more vectors than N; with max_dim > 0,
// a D above it (said at the header, before the file is read).
WordVectors readWord2Vec(const std::string& path, int64_t max_dim = 0);

struct Neighbor {
  int64_t index;
  float similarity;  // cosine
};
// The k nearest rows to row `index` by cosine (itself excluded), best first.
std::vector<Neighbor> nearestNeighbors(const WordVectors& vectors, int64_t index, int k);

}  // namespace ringtrain::model
