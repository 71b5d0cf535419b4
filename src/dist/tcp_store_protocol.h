// The TCP store's wire format (see include/ringtrain/dist/tcp_store.h for the framing). Encoding and
// decoding only; no I/O. Decoding is bounds-checked: a short or inconsistent payload throws WireError,
// which the server turns into closing that one connection.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace ringtrain::dist::wire {

enum class Op : uint8_t { kHello = 1, kSet, kGet, kAdd, kCompareSet, kCheck, kWait, kDelete };
enum class Status : uint8_t { kOk = 0, kTimeout = 1, kError = 2 };

struct WireError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Writer {
 public:
  // Reserves the 4-byte frame length, filled by frame().
  Writer() : buf_(4, 0) {}
  Writer& u8(uint8_t v) {
    buf_.push_back(v);
    return *this;
  }
  Writer& u32(uint32_t v) { return raw(&v, 4); }
  Writer& u64(uint64_t v) { return raw(&v, 8); }
  Writer& i64(int64_t v) { return raw(&v, 8); }
  Writer& bytes(const void* data, size_t n) {
    u32(static_cast<uint32_t>(n));
    return raw(data, n);
  }
  Writer& str(const std::string& s) { return bytes(s.data(), s.size()); }
  Writer& vec(const std::vector<uint8_t>& v) { return bytes(v.data(), v.size()); }
  // The finished frame: length prefix + payload.
  std::vector<uint8_t> frame() {  // leaves the writer empty
    const uint32_t n = static_cast<uint32_t>(buf_.size() - 4);
    std::memcpy(buf_.data(), &n, 4);  // little-endian hosts only (x86-64, aarch64)
    return std::move(buf_);
  }

 private:
  Writer& raw(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    buf_.insert(buf_.end(), p, p + n);
    return *this;
  }
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  uint8_t u8() {
    need(1);
    return *p_++;
  }
  uint32_t u32() { return fixed<uint32_t>(); }
  uint64_t u64() { return fixed<uint64_t>(); }
  int64_t i64() { return fixed<int64_t>(); }
  std::string str() {
    const uint32_t n = u32();
    need(n);
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  std::vector<uint8_t> vec() {
    const uint32_t n = u32();
    need(n);
    std::vector<uint8_t> v(p_, p_ + n);
    p_ += n;
    return v;
  }
  std::vector<std::string> strs() {
    const uint32_t n = u32();
    // Each string takes at least its 4-byte length: refuse counts the payload cannot hold.
    if (n > static_cast<size_t>(end_ - p_) / 4) throw WireError("key count larger than the message");
    std::vector<std::string> out;
    out.reserve(n);
    for (uint32_t i = 0; i < n; ++i) out.push_back(str());
    return out;
  }
  bool done() const { return p_ == end_; }
  void expectDone() const {
    if (!done()) throw WireError("trailing bytes after the message");
  }

 private:
  template <typename T>
  T fixed() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  void need(size_t n) const {
    if (static_cast<size_t>(end_ - p_) < n) throw WireError("message shorter than its fields");
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace ringtrain::dist::wire
