// A key-value store that the ranks of one job share to meet: exchange Gloo addresses and NCCL unique ids,
// agree on config hashes, and find out who is missing when a collective hangs.
// Values are bytes. Every blocking call takes a timeout and throws TimeoutError naming the keys it waited
// for; a dead or unreachable store throws CommError. Implementations are safe to call from many threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ringtrain::dist {

using Bytes = std::vector<uint8_t>;

class Store {
 public:
  virtual ~Store() = default;

  virtual void set(const std::string& key, const Bytes& value) = 0;
  // Waits until `key` exists, then returns its value.
  virtual Bytes get(const std::string& key, std::chrono::milliseconds timeout) = 0;
  // Atomically adds `delta` to the integer stored at `key` (absent = 0) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Atomically: if the value at `key` equals `expected` (absent matches an empty `expected`), store
  // `desired`. Returns the value now stored.
  virtual Bytes compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) = 0;
  // True when every key exists, without waiting.
  virtual bool check(const std::vector<std::string>& keys) = 0;
  // Waits until every key exists.
  virtual void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) = 0;
  virtual bool deleteKey(const std::string& key) = 0;
};

// Keys under a prefix ("prefix/key"), so that several users of one store (rendezvous, collectives checks,
// the trainer) cannot collide.
class PrefixStore final : public Store {
 public:
  // `base` must outlive this object.
  PrefixStore(std::string prefix, Store& base) : prefix_(std::move(prefix)), base_(base) {}
  void set(const std::string& key, const Bytes& value) override { base_.set(full(key), value); }
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override { return base_.get(full(key), timeout); }
  int64_t add(const std::string& key, int64_t delta) override { return base_.add(full(key), delta); }
  Bytes compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) override {
    return base_.compareSet(full(key), expected, desired);
  }
  bool check(const std::vector<std::string>& keys) override { return base_.check(full(keys)); }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override {
    base_.wait(full(keys), timeout);
  }
  bool deleteKey(const std::string& key) override { return base_.deleteKey(full(key)); }

 private:
  std::string full(const std::string& key) const { return prefix_ + "/" + key; }
  std::vector<std::string> full(const std::vector<std::string>& keys) const {
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(full(k));
    return out;
  }

  std::string prefix_;
  Store& base_;
};

// Caps every store call this thread makes while it lives: each must end within `budget` of the cap's
// construction (nested caps: the earliest end holds). A diagnosis on an error path (who did not arrive, who
// failed) must not wait out a stopped store's whole operation timeout. TcpStoreClient honours it, as a
// call that was not answered in time (CommError); the in-memory store never waits on another process.
class StoreCallCap {
 public:
  explicit StoreCallCap(std::chrono::milliseconds budget);
  ~StoreCallCap();
  StoreCallCap(const StoreCallCap&) = delete;
  StoreCallCap& operator=(const StoreCallCap&) = delete;

  // The earliest end in force on this thread; time_point::max() without a cap.
  static std::chrono::steady_clock::time_point end();

 private:
  std::chrono::steady_clock::time_point previous_;
};

inline Bytes toBytes(const std::string& s) { return Bytes(s.begin(), s.end()); }
inline std::string toString(const Bytes& b) { return std::string(b.begin(), b.end()); }

}  // namespace ringtrain::dist
