// A Store inside one process, for ranks that are threads (unit tests) and for the TCP store server's own
// table. Waits use a condition variable, never a sleep loop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>

#include "ringtrain/dist/store.h"

namespace ringtrain::dist {

class MemoryStore final : public Store {
 public:
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  Bytes compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  bool deleteKey(const std::string& key) override;

 private:
  bool hasAllLocked(const std::vector<std::string>& keys) const;

  mutable std::mutex mu_;
  std::condition_variable changed_;    // notified on every write; waiters re-check their keys
  std::map<std::string, Bytes> data_;  // guarded by mu_
};

}  // namespace ringtrain::dist
