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
    : enabled_(max_entries > 0 && max_bytes > 0), shards_(kShards) {
  if (!enabled_) return;
  for (int i = 0; i < kShards; ++i) {
    shards_[i].max_entries = max_entries / kShards + (i < max_entries % kShards ? 1 : 0);
    shards_[i].max_bytes = max_bytes / kShards + (i < max_bytes % kShards ? 1 : 0);
  }
}

std::string ResultCache::key(uint64_t version, const std::string& normalized_query, int k) {
  return std::to_string(version) + '\x1f' + std::to_string(k) + '\x1f' + normalized_query;
}

int64_t ResultCache::entryBytes(const std::string& key, const std::string& value) {
  return 2 * static_cast<int64_t>(key.size()) + static_cast<int64_t>(value.size()) + kEntryOverheadBytes;
}

ResultCache::Shard& ResultCache::shardOf(const std::string& key) {
  return shards_[std::hash<std::string>{}(key) % kShards];
}

void ResultCache::erase(Shard& s, std::list<std::pair<std::string, std::string>>::iterator it) {
  s.bytes -= entryBytes(it->first, it->second);
  s.map.erase(it->first);
  s.lru.erase(it);
}

std::optional<std::string> ResultCache::get(const std::string& key) {
  if (!enabled_) return std::nullopt;
  Shard& s = shardOf(key);
  std::lock_guard<std::mutex> lock(s.mu);
  const auto it = s.map.find(key);
  if (it == s.map.end()) return std::nullopt;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->second;
}

void ResultCache::put(const std::string& key, std::string value) {
  if (!enabled_) return;
  Shard& s = shardOf(key);
  if (s.max_entries == 0) return;
  const int64_t size = entryBytes(key, value);
  std::lock_guard<std::mutex> lock(s.mu);
  if (const auto it = s.map.find(key); it != s.map.end()) erase(s, it->second);
  if (size > s.max_bytes) return;  // would push out the whole shard and still not fit
  s.lru.emplace_front(key, std::move(value));
  s.map.emplace(key, s.lru.begin());
  s.bytes += size;
  while (static_cast<int64_t>(s.lru.size()) > s.max_entries || s.bytes > s.max_bytes) erase(s, std::prev(s.lru.end()));
}

void ResultCache::clear() {
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.map.clear();
    s.lru.clear();
    s.bytes = 0;
  }
}

int64_t ResultCache::size() const {
  int64_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    n += static_cast<int64_t>(s.lru.size());
  }
  return n;
}

int64_t ResultCache::bytes() const {
  int64_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    n += s.bytes;
  }
  return n;
}

}  // namespace ringtrain::serve
