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
  if ((tag & 0xFF) == kDdpFinalizeTag) {
    return fmt::format("DistributedDataParallel object {}, iteration {} (mod 4096), finalize()'s own collectives",
                       tag >> 20, (tag >> 8) & 0xFFF);
  }
  return fmt::format("DistributedDataParallel object {}, iteration {} (mod 4096), bucket {}", tag >> 20,
                     (tag >> 8) & 0xFFF, tag & 0xFF);
}

std::string tagMismatchHint(uint32_t a, uint32_t b) {
  if (a == b) return "";
  if (a == 0 || b == 0) {
    return "an untagged collective (the caller's own) met a DistributedDataParallel one: collectives issued "
           "between backward() and finalize() come in another order where a bucket waits for finalize() on some "
           "ranks (a parameter unused there), or the ranks ran backward() and finalize() a different number of "
           "times";
  }
  if ((a >> 20) != (b >> 20)) {
    return "two DistributedDataParallel objects on one communicator issued their buckets in another order "
           "(a bucket with a parameter unused on some ranks waits for finalize() there): give each object its "
           "own communicator";
  }
  if (((a >> 8) & 0xFFF) != ((b >> 8) & 0xFFF)) {
    return "the ranks are at different iterations: finalize() ran a different number of times on them";
  }
  if (((a & 0xFF) == kDdpFinalizeTag) != ((b & 0xFF) == kDdpFinalizeTag)) {
    return "one rank is in finalize()'s own collectives (sparse rows, buffers, the replica check) while another "
           "still sends this iteration's buckets: the ranks ran backward() and finalize() a different number of "
           "times";
  }
  return "the ranks' buckets differ (their models' parameters, or their order, differ)";
}

}  // namespace ringtrain::comm
