// The item vocabulary of a corpus: string tokens <-> dense int32 ids, with occurrence counts.
// Ids are sorted by descending count (ties by token text), so id 0 is the most frequent item.
// Memory stays proportional to the text of the tokens: one character arena, one offset and one count
// per token, and a sorted index for id(token) built on first use (no hash map of strings kept).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringtrain::data {

class Vocabulary {
 public:
  Vocabulary();
  // tokens[i] has counts[i]; throws ringtrain::Error if the sizes differ.
  Vocabulary(std::string arena, std::vector<int64_t> offsets, std::vector<int64_t> counts);

  int64_t size() const { return static_cast<int64_t>(counts_.size()); }
  std::string_view token(int32_t id) const {
    return std::string_view(arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  // -1 when the token is not in the vocabulary. Thread-safe; O(log n).
  int32_t id(std::string_view token) const;
  int64_t count(int32_t id) const { return counts_[id]; }
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t totalCount() const { return total_; }

  // Raw storage (the binary cache writes and reads these).
  const std::string& arena() const { return arena_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }  // size() + 1 entries

 private:
  std::string arena_;
  std::vector<int64_t> offsets_{0};
  std::vector<int64_t> counts_;
  int64_t total_ = 0;
  struct SortedIndex;  // ids in token order, built on the first id() call (thread-safe, once)
  std::shared_ptr<SortedIndex> index_;
};

}  // namespace ringtrain::data
