#include "serve/result_cache.h"

#include <cstdint>
#include <functional>
#include <iterator>

namespace ringtrain::serve {

namespace {
// A list node, a hash node and bucket, two string headers: an estimate, so that many tiny answers count too.
constexpr int64_t kEntryOverheadBytes = 160;
}  // namespace

ResultCache::ResultCache(int64_t max_entries, int64_t max_bytes)
    : enabled_(max_entries > 0 && max_bytes > 0), max_entries_(max_entries), max_bytes_(max_bytes), shards_(kShards) {}

std::string ResultCache::key(uint64_t version, const std::string& normalized_query, int k) {
  return std::to_string(version) + '\x1f' + std::to_string(k) + '\x1f' + normalized_query;
}

int64_t ResultCache::entryBytes(const std::string& key, const std::string& value) {
  return 2 * static_cast<int64_t>(key.size()) + static_cast<int64_t>(value.size()) + kEntryOverheadBytes;
}

size_t ResultCache::shardOf(const std::string& key) const { return std::hash<std::string>{}(key) % kShards; }

void ResultCache::erase(Shard& s, Lru::iterator it) {
  entries_.fetch_sub(1, std::memory_order_relaxed);
  bytes_.fetch_sub(entryBytes(it->first, it->second), std::memory_order_relaxed);
  s.map.erase(it->first);
  s.lru.erase(it);
}

std::optional<std::string> ResultCache::get(const std::string& key) {
  if (!enabled_) return std::nullopt;
  Shard& s = shards_[shardOf(key)];
  std::lock_guard<std::mutex> lock(s.mu);
  const auto it = s.map.find(key);
  if (it == s.map.end()) return std::nullopt;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->second;
}

void ResultCache::put(const std::string& key, std::string value) {
  if (!enabled_) return;
  const int64_t size = entryBytes(key, value);
  {
    Shard& s = shards_[shardOf(key)];
    std::lock_guard<std::mutex> lock(s.mu);
    if (const auto it = s.map.find(key); it != s.map.end()) erase(s, it->second);
    if (size > max_bytes_ / kShards) return;
    s.lru.emplace_front(key, std::move(value));
    s.map.emplace(key, s.lru.begin());
    entries_.fetch_add(1, std::memory_order_relaxed);
    bytes_.fetch_add(size, std::memory_order_relaxed);
  }
  // Over a bound: the oldest answer of each shard in turn goes (a cursor shared by all inserts), one at a time
  // and one lock at a time, until under. Taking from the inserting shard alone would empty it of hot answers
  // while older ones stayed elsewhere. The answer just put stays, unless another insert already pushed it out.
  for (int idle = 0; overBounds() && idle < kShards;) {
    Shard& s = shards_[evict_cursor_.fetch_add(1, std::memory_order_relaxed) % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    if (overBounds() && !s.lru.empty() && s.lru.back().first != key) {
      erase(s, std::prev(s.lru.end()));
      idle = 0;
    } else {
      ++idle;
    }
  }
}

void ResultCache::clear() {
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    while (!s.lru.empty()) erase(s, s.lru.begin());
  }
}

}  // namespace ringtrain::serve
