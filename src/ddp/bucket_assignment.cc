#include "ringtrain/ddp/bucket_assignment.h"

#include <algorithm>
#include <map>
#include <utility>

#include "ringtrain/core/error.h"

namespace ringtrain::ddp {

std::vector<std::vector<size_t>> assignBuckets(const std::vector<BucketParam>& params,
                                               const std::vector<size_t>& order, BucketLimits limits) {
  RT_CHECK_EQ(order.size(), params.size(), "bucket order must list every parameter once");
  std::vector<bool> seen(params.size(), false);
  for (size_t index : order) {
    RT_CHECK_LT(index, params.size(), "bucket order names a parameter that does not exist");
    RT_CHECK(!seen[index], "bucket order lists parameter ", index, " twice");
    seen[index] = true;
  }

  struct Open {
    std::vector<size_t> members;
    size_t bytes = 0;
    bool first = true;  // the next bucket of this kind is the first one
  };
  // (position of first member in `order`, members)
  std::vector<std::pair<size_t, std::vector<size_t>>> closed;
  std::map<std::pair<int, int>, Open> open;
  std::vector<size_t> position(params.size());
  for (size_t p = 0; p < order.size(); ++p) position[order[p]] = p;

  for (size_t index : order) {
    const BucketParam& param = params[index];
    Open& bucket = open[{param.dtype, param.device}];
    bucket.members.push_back(index);
    bucket.bytes += param.bytes;
    const size_t limit = bucket.first ? limits.first_cap_bytes : limits.cap_bytes;
    if (bucket.bytes >= limit) {
      closed.emplace_back(position[bucket.members.front()], std::move(bucket.members));
      bucket.members.clear();
      bucket.bytes = 0;
      bucket.first = false;
    }
  }
  for (auto& [kind, bucket] : open) {
    if (!bucket.members.empty()) closed.emplace_back(position[bucket.members.front()], std::move(bucket.members));
  }
  std::sort(closed.begin(), closed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::vector<size_t>> buckets;
  buckets.reserve(closed.size());
  for (auto& entry : closed) buckets.push_back(std::move(entry.second));
  return buckets;
}

std::vector<size_t> reverseOrder(size_t n) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = n - 1 - i;
  return order;
}

std::vector<size_t> completeOrder(const std::vector<size_t>& observed, size_t n) {
  std::vector<bool> seen(n, false);
  std::vector<size_t> order;
  order.reserve(n);
  for (size_t index : observed) {
    RT_CHECK_LT(index, n, "observed gradient order names a parameter that does not exist");
    if (seen[index]) continue;
    seen[index] = true;
    order.push_back(index);
  }
  for (size_t i = n; i-- > 0;) {
    if (!seen[i]) order.push_back(i);
  }
  return order;
}

}  // namespace ringtrain::ddp
