// Small, fast, portable random number generation for data pipelines. std::mt19937 with the standard
// distributions gives different numbers on different standard libraries; these give the same stream
// everywhere, which is what "same seed, same batches" needs.
//   SplitMix64  - seeds and hashes: mix(a, b, c...) turns a tuple (seed, epoch, line) into a seed.
//   Xoshiro256  - the generator (xoshiro256**, Blackman & Vigna), seeded through SplitMix64.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace ringtrain::data {

inline uint64_t splitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 64-bit hash of a tuple of integers; the seed of every per-(epoch, line) or per-(epoch, rank, batch)
// stream, so each can be regenerated on its own, on any thread, in any order.
inline uint64_t mixSeed(std::initializer_list<uint64_t> parts) {
  uint64_t state = 0x6a09e667f3bcc909ULL;
  uint64_t h = 0;
  for (uint64_t p : parts) {
    state ^= p + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h = splitMix64(state);
  }
  return h;
}

class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed) {
    uint64_t sm = seed;
    for (auto& w : s_) w = splitMix64(sm);
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n) by multiply-shift (Lemire); the bias, below n / 2^64, is irrelevant here.
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace ringtrain::data
