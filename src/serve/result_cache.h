// Bounded LRU cache of rendered answers, keyed by (model version, normalized query, k). Sharded: a key's
// hash picks one of kShards independently locked LRUs, so concurrent readers rarely meet on a lock. The
// version is part of every key and the server also clears the cache on a swap, so an answer computed on an
// old model is never served for a new one (an insert racing a swap carries the old version in its key and
// can only be found by a request that still holds the old model).
//
// Bounded twice, over the whole cache: in entries, and in bytes (keys, answers and a fixed cost per entry).
// An answer is 90 bytes per item returned plus its names, so entries alone would let a few thousand
// k = 1,000 answers hold gigabytes. The bounds are the cache's, not each shard's share: shares split by
// hash filled unevenly, and a working set that fitted the bound was evicted from its fuller shards (a
// repeated cycle of 2,000 queries in 2,000 entries hit 60%). An insert that goes over evicts the oldest answer
// of each shard in turn until under, taking one shard lock at a time. An answer larger than a sixteenth of
// the bytes is not kept: it would push out many others.
#pragma once

#include <atomic>
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
  int64_t size() const { return entries_.load(std::memory_order_relaxed); }
  int64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  static constexpr int kShards = 16;
  using Lru = std::list<std::pair<std::string, std::string>>;  // most recent first
  struct Shard {
    std::mutex mu;
    Lru lru;                                            // guarded by mu
    std::unordered_map<std::string, Lru::iterator> map;  // guarded by mu
  };
  size_t shardOf(const std::string& key) const;
  bool overBounds() const { return size() > max_entries_ || bytes() > max_bytes_; }
  void erase(Shard& s, Lru::iterator it);  // s.mu held

  const bool enabled_;
  const int64_t max_entries_;
  const int64_t max_bytes_;
  std::atomic<int64_t> entries_{0};
  std::atomic<int64_t> bytes_{0};
  std::atomic<size_t> evict_cursor_{0};  // the shard whose oldest answer goes next
  std::vector<Shard> shards_;
};

}  // namespace ringtrain::serve
