#include "ringtrain/comm/collective_tag.h"

#include <fmt/format.h>

namespace ringtrain::comm {

namespace {
thread_local uint32_t t_tag = 0;
}  // namespace

CollectiveTag::CollectiveTag(uint32_t tag) : previous_(t_tag) { t_tag = tag & kTagMask; }

CollectiveTag::~CollectiveTag() { t_tag = previous_; }

uint32_t CollectiveTag::current() { return t_tag; }

uint32_t ddpTag(int object, int64_t iteration, int64_t bucket) {
  const uint32_t o = static_cast<uint32_t>((object - 1) % 15 + 1);  // never 0: 0 is no tag
  return (o << 20) | (static_cast<uint32_t>(iteration % 4096) << 8) | static_cast<uint32_t>(bucket % 256);
}

std::string describeTag(uint32_t tag) {
  if (tag == 0) return "untagged";
  return fmt::format("DistributedDataParallel object {}, iteration {} (mod 4096), bucket {}", tag >> 20,
                     (tag >> 8) & 0xFFF, tag & 0xFF);
}

}  // namespace ringtrain::comm
