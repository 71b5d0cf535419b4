#include "ringtrain/data/vocabulary.h"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <numeric>

#include "ringtrain/core/error.h"

namespace ringtrain::data {

struct Vocabulary::SortedIndex {
  std::once_flag once;
  std::vector<int32_t> ids;
};

Vocabulary::Vocabulary() : index_(std::make_shared<SortedIndex>()) {}

Vocabulary::Vocabulary(std::string arena, std::vector<int64_t> offsets, std::vector<int64_t> counts)
    : arena_(std::move(arena)),
      offsets_(std::move(offsets)),
      counts_(std::move(counts)),
      index_(std::make_shared<SortedIndex>()) {
  RT_CHECK_EQ(offsets_.size(), counts_.size() + 1, "vocabulary offsets and counts disagree");
  RT_CHECK(offsets_.front() == 0 && offsets_.back() == static_cast<int64_t>(arena_.size()),
           "vocabulary offsets do not span the arena");
  RT_CHECK_LT(counts_.size(), size_t{1} << 31, "vocabulary too large for int32 ids");
  total_ = std::accumulate(counts_.begin(), counts_.end(), int64_t{0});
}

int32_t Vocabulary::id(std::string_view token) const {
  std::vector<int32_t>& ids = index_->ids;
  std::call_once(index_->once, [this, &ids] {
    ids.resize(counts_.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::sort(ids.begin(), ids.end(), [this](int32_t a, int32_t b) { return this->token(a) < this->token(b); });
  });
  auto it = std::lower_bound(ids.begin(), ids.end(), token,
                             [this](int32_t a, std::string_view t) { return this->token(a) < t; });
  if (it != ids.end() && this->token(*it) == token) return *it;
  return -1;
}

}  // namespace ringtrain::data
