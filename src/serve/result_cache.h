// Bounded LRU cache of rendered answers, keyed by (model version, normalized query, k). Sharded: a key's
// hash picks one of kShards independently locked LRUs, so concurrent readers rarely meet on a lock. The
// version is part of every key and the server also clears the cache on a swap, so an answer computed on an
// old model is never served for a new one (an insert racing a swap carries the old version in its key and
// can only be found by a request that still holds the old model).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ringtrain::serve {

class ResultCache {
 public:
  explicit ResultCache(int64_t capacity);
  bool enabled() const { return capacity_ > 0; }
  static std::string key(uint64_t version, const std::string& normalized_query, int k);
  std::optional<std::string> get(const std::string& key);
  void put(const std::string& key, std::string value);
  void clear();
  int64_t size() const;

 private:
  static constexpr int kShards = 16;
  struct Shard {
    mutable std::mutex mu;
    std::list<std::pair<std::string, std::string>> lru;  // most recent first; guarded by mu
    std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> map;  // guarded by mu
    int64_t capacity = 0;
  };
  Shard& shardOf(const std::string& key);

  int64_t capacity_;
  std::vector<Shard> shards_;
};

}  // namespace ringtrain::serve
