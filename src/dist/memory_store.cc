#include "ringtrain/dist/memory_store.h"

#include <charconv>
#include <cstdint>

#include "ringtrain/core/error.h"

namespace ringtrain::dist {
namespace {

std::string joinKeys(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

}  // namespace

void MemoryStore::set(const std::string& key, const Bytes& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key] = value;
  }
  changed_.notify_all();
}

Bytes MemoryStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  wait({key}, timeout);
  std::lock_guard<std::mutex> lock(mu_);
  return data_.at(key);
}

int64_t MemoryStore::add(const std::string& key, int64_t delta) {
  int64_t value = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    if (it != data_.end()) {
      const std::string text = toString(it->second);
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      RT_CHECK_T(CommError, ec == std::errc() && ptr == text.data() + text.size(),
                 "store key '", key, "' does not hold an integer");
    }
    value += delta;
    data_[key] = toBytes(std::to_string(value));
  }
  changed_.notify_all();
  return value;
}

Bytes MemoryStore::compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) {
  Bytes now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    const bool matches = it == data_.end() ? expected.empty() : it->second == expected;
    if (matches) data_[key] = desired;
    now = data_.count(key) ? data_[key] : Bytes{};
  }
  changed_.notify_all();
  return now;
}

bool MemoryStore::hasAllLocked(const std::vector<std::string>& keys) const {
  for (const auto& k : keys) {
    if (data_.count(k) == 0) return false;
  }
  return true;
}

bool MemoryStore::check(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  return hasAllLocked(keys);
}

void MemoryStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!changed_.wait_for(lock, timeout, [&] { return hasAllLocked(keys); })) {
    std::vector<std::string> missing;
    for (const auto& k : keys) {
      if (data_.count(k) == 0) missing.push_back(k);
    }
    RT_THROW(TimeoutError, "store wait timed out after ", timeout.count(), " ms; missing keys: ", joinKeys(missing));
  }
}

bool MemoryStore::deleteKey(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.erase(key) > 0;
}

}  // namespace ringtrain::dist
