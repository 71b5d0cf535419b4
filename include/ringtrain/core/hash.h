// FNV-1a, 64 bits: the one byte hash ringtrain uses where it needs a stable, portable fingerprint (the
// corpus cache key, the config hash in checkpoints, the ranks' parameter fingerprints). Not for security.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringtrain {

inline constexpr uint64_t kFnv1aOffsetBasis = 0xcbf29ce484222325ull;
inline constexpr uint64_t kFnv1aPrime = 0x100000001b3ull;

// Continues `hash` over `bytes` bytes at `data`: hashing a buffer in pieces gives the same value as in one go.
inline uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = kFnv1aOffsetBasis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= kFnv1aPrime;
  }
  return hash;
}

}  // namespace ringtrain
