// What a reader of the word2vec text format (`N D`, then `token v1 .. vD` per line) may trust its header
// with. Shared by model/word2vec_io (export, neighbors) and the server's loader; no LibTorch here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

namespace ringtrain::model {

// The most values (N x D) a header may announce; both readers refuse more.
inline constexpr int64_t kMaxWord2VecValues = int64_t{1} << 34;

// How many values the file at `path` can hold at most, each taking at least two bytes ("0 "): what a
// reader may reserve before reading them, since a header is not trusted with an allocation. 0 when the
// size cannot be read.
inline int64_t word2vecValuesFileCanHold(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t bytes = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(bytes / 2);
}

}  // namespace ringtrain::model
