// Bounded LRU cache of rendered answers, keyed by (model version, normalized query, k). Sharded: a key's
// hash picks one of kShards independently locked LRUs, so concurrent readers rarely meet on a lock. The
// version is part of every key and the server also clears the cache on a swap, so an answer computed on an
// old model is never served for a new one (an insert racing a swap carries the old version in its key and
// can only be found by a request that still holds the old model).
//
// Bounded twice: in entries, and in bytes (keys, answers and a fixed cost per entry), each shard holding its
// share of both. An answer is 90 bytes per item returned plus its names, so entries alone would let a few
// thousand k = 1,000 answers hold gigabytes; an entry larger than a shard's share of the bytes is not kept.
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
  // Either bound 0 turns the cache off.
  ResultCache(int64_t max_entries, int64_t max_bytes);
  bool enabled() const { return enabled_; }
  static std::string key(uint64_t version, const std::string& normalized_query, int k);
  // What an entry counts against the byte bound: the key twice (list and index), the answer, the nodes.
  static int64_t entryBytes(const std::string& key, const std::string& value);
  std::optional<std::string> get(const std::string& key);
  void put(const std::string& key, std::string value);
  void clear();
  int64_t size() const;
  int64_t bytes() const;

 private:
  static constexpr int kShards = 16;
  struct Shard {
    mutable std::mutex mu;
    std::list<std::pair<std::string, std::string>> lru;  // most recent first; guarded by mu
    std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> map;  // guarded by mu
    int64_t bytes = 0;  // guarded by mu: entryBytes() of what lru holds
    int64_t max_entries = 0;
    int64_t max_bytes = 0;
  };
  Shard& shardOf(const std::string& key);
  static void erase(Shard& s, std::list<std::pair<std::string, std::string>>::iterator it);

  bool enabled_;
  std::vector<Shard> shards_;
};

}  // namespace ringtrain::serve
