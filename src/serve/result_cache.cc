#include "serve/result_cache.h"

#include <cstdint>
#include <functional>

namespace ringtrain::serve {

ResultCache::ResultCache(int64_t capacity) : capacity_(capacity), shards_(kShards) {
  for (int i = 0; i < kShards; ++i) shards_[i].capacity = capacity / kShards + (i < capacity % kShards ? 1 : 0);
}

std::string ResultCache::key(uint64_t version, const std::string& normalized_query, int k) {
  return std::to_string(version) + '\x1f' + std::to_string(k) + '\x1f' + normalized_query;
}

ResultCache::Shard& ResultCache::shardOf(const std::string& key) {
  return shards_[std::hash<std::string>{}(key) % kShards];
}

std::optional<std::string> ResultCache::get(const std::string& key) {
  if (!enabled()) return std::nullopt;
  Shard& s = shardOf(key);
  std::lock_guard<std::mutex> lock(s.mu);
  const auto it = s.map.find(key);
  if (it == s.map.end()) return std::nullopt;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->second;
}

void ResultCache::put(const std::string& key, std::string value) {
  if (!enabled()) return;
  Shard& s = shardOf(key);
  if (s.capacity == 0) return;
  std::lock_guard<std::mutex> lock(s.mu);
  const auto it = s.map.find(key);
  if (it != s.map.end()) {
    it->second->second = std::move(value);
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return;
  }
  s.lru.emplace_front(key, std::move(value));
  s.map.emplace(key, s.lru.begin());
  while (static_cast<int64_t>(s.lru.size()) > s.capacity) {
    s.map.erase(s.lru.back().first);
    s.lru.pop_back();
  }
}

void ResultCache::clear() {
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.map.clear();
    s.lru.clear();
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

}  // namespace ringtrain::serve
