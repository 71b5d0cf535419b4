// A label that a caller puts on the collectives it issues, checked across ranks with the rest of each
// collective's description (CommOptions::check_collectives). Ranks that issue collectives of one shape for
// different purposes (two DistributedDataParallel objects on one communicator, a bucket of one iteration
// against a bucket of the next) would otherwise have their buffers summed together without a word; with
// tags that differ they get a CommError naming both.
//
// 24 bits; 0 is no tag (every collective issued outside a CollectiveTag scope). The tag is per thread: it
// labels the collectives the scope's own thread issues.
#pragma once

#include <cstdint>
#include <string>

namespace ringtrain::comm {

class CollectiveTag {
 public:
  explicit CollectiveTag(uint32_t tag);  // the low 24 bits
  ~CollectiveTag();                      // restores the enclosing scope's tag
  CollectiveTag(const CollectiveTag&) = delete;
  CollectiveTag& operator=(const CollectiveTag&) = delete;

  // The tag of collectives this thread issues now.
  static uint32_t current();

 private:
  uint32_t previous_;
};

inline constexpr uint32_t kTagMask = 0xFFFFFF;

// DistributedDataParallel's tags: its object on the communicator (1-15, by how many were alive when it was
// built), its iteration (mod 4096) and the bucket (mod 256).
uint32_t ddpTag(int object, int64_t iteration, int64_t bucket);
// The "bucket" of an object's own collectives at finalize() (sparse rows, buffers, the replica check): so
// that ranks whose finalize() counts differ meet "another iteration", not "an untagged collective".
inline constexpr int64_t kDdpFinalizeTag = 255;
// "DistributedDataParallel object 1, iteration 3, bucket 0" ("untagged" for 0).
std::string describeTag(uint32_t tag);
// Why two ranks' tags for one collective may differ, for the mismatch message ("" when they are equal).
std::string tagMismatchHint(uint32_t a, uint32_t b);

}  // namespace ringtrain::comm
