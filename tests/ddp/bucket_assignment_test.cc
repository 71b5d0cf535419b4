#include "ringtrain/ddp/bucket_assignment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "ringtrain/core/error.h"

namespace ringtrain::ddp {
namespace {

// Checks every property the assignment promises, for one input.
void checkInvariants(const std::vector<BucketParam>& params, const std::vector<size_t>& order,
                     BucketLimits limits, const std::vector<std::vector<size_t>>& buckets) {
  std::vector<size_t> position(params.size());
  for (size_t p = 0; p < order.size(); ++p) position[order[p]] = p;
  // A partition of all parameters.
  std::vector<int> count(params.size(), 0);
  for (const auto& bucket : buckets) {
    ASSERT_FALSE(bucket.empty());
    for (size_t i : bucket) ++count[i];
  }
  for (int c : count) ASSERT_EQ(c, 1);
  // Never mixing kinds; members in visiting order; buckets ordered by first member.
  for (size_t b = 0; b < buckets.size(); ++b) {
    for (size_t k = 1; k < buckets[b].size(); ++k) {
      ASSERT_EQ(params[buckets[b][k]].dtype, params[buckets[b][0]].dtype);
      ASSERT_EQ(params[buckets[b][k]].device, params[buckets[b][0]].device);
      ASSERT_LT(position[buckets[b][k - 1]], position[buckets[b][k]]);
    }
    if (b > 0) ASSERT_LT(position[buckets[b - 1][0]], position[buckets[b][0]]);
  }
  // Sizes: per kind, in order, every bucket but the last reaches its limit and would not have without its
  // last member; the first bucket of a kind uses the first limit.
  std::map<std::pair<int, int>, std::vector<const std::vector<size_t>*>> by_kind;
  for (const auto& bucket : buckets) by_kind[{params[bucket[0]].dtype, params[bucket[0]].device}].push_back(&bucket);
  for (const auto& [kind, list] : by_kind) {
    for (size_t k = 0; k < list.size(); ++k) {
      size_t bytes = 0;
      for (size_t i : *list[k]) bytes += params[i].bytes;
      const size_t limit = k == 0 ? limits.first_cap_bytes : limits.cap_bytes;
      const size_t without_last = bytes - params[list[k]->back()].bytes;
      ASSERT_LT(without_last, limit) << "bucket should have closed earlier";
      if (k + 1 < list.size()) ASSERT_GE(bytes, limit) << "bucket closed too early";
    }
  }
}

TEST(BucketAssignment, ClosedFormExample) {
  // 6 float params of 400 bytes in reverse order; first bucket 500 bytes, then 1000.
  std::vector<BucketParam> params(6, BucketParam{400, 6, -1});
  auto buckets = assignBuckets(params, reverseOrder(6), {500, 1000});
  std::vector<std::vector<size_t>> expected{{5, 4}, {3, 2, 1}, {0}};
  EXPECT_EQ(buckets, expected);
}

TEST(BucketAssignment, SeparatesDtypesAndDevices) {
  std::vector<BucketParam> params{{100, 6, -1}, {100, 7, -1}, {100, 6, 0}, {100, 6, -1}, {100, 7, -1}};
  auto buckets = assignBuckets(params, reverseOrder(5), {1000, 1000});
  std::vector<std::vector<size_t>> expected{{4, 1}, {3, 0}, {2}};
  EXPECT_EQ(buckets, expected);
}

TEST(BucketAssignment, LargeParameterGetsItsOwnBucket) {
  std::vector<BucketParam> params{{10, 6, -1}, {5000, 6, -1}, {10, 6, -1}};
  auto buckets = assignBuckets(params, {0, 1, 2}, {100, 100});
  std::vector<std::vector<size_t>> expected{{0, 1}, {2}};
  EXPECT_EQ(buckets, expected);
  buckets = assignBuckets(params, {1, 0, 2}, {100, 100});
  expected = {{1}, {0, 2}};
  EXPECT_EQ(buckets, expected);
}

TEST(BucketAssignment, EmptyAndBadOrders) {
  EXPECT_TRUE(assignBuckets({}, {}, {}).empty());
  std::vector<BucketParam> params(3, BucketParam{8, 6, -1});
  EXPECT_THROW(assignBuckets(params, {0, 1}, {}), Error);
  EXPECT_THROW(assignBuckets(params, {0, 1, 1}, {}), Error);
  EXPECT_THROW(assignBuckets(params, {0, 1, 3}, {}), Error);
}

// Every sequence of up to 4 parameters drawn from 3 sizes x 2 dtypes x 2 devices under several limits: every
// visiting order up to 3 parameters, forward and reverse order for 4 (all orders for every 7th of them).
TEST(BucketAssignment, ExhaustiveInvariants) {
  const std::vector<size_t> sizes{4, 40, 120};
  const std::vector<BucketLimits> limits{{1, 1}, {50, 100}, {100, 50}, {1000, 1000}, {40, 44}};
  int cases = 0;
  for (size_t n = 1; n <= 4; ++n) {
    size_t combos = 1;
    for (size_t i = 0; i < n; ++i) combos *= 12;
    for (size_t code = 0; code < combos; ++code) {
      const bool all_orders = n <= 3 || code % 7 == 0;
      std::vector<BucketParam> params;
      size_t c = code;
      for (size_t i = 0; i < n; ++i) {
        size_t kind = c % 12;
        c /= 12;
        params.push_back({sizes[kind % 3], static_cast<int>((kind / 3) % 2), static_cast<int>(kind / 6) - 1});
      }
      std::vector<size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::vector<std::vector<size_t>> orders;
      if (all_orders) {
        do orders.push_back(order);
        while (std::next_permutation(order.begin(), order.end()));
      } else {
        orders = {order, reverseOrder(n)};
      }
      for (const auto& visit : orders) {
        for (const auto& limit : limits) {
          auto buckets = assignBuckets(params, visit, limit);
          checkInvariants(params, visit, limit, buckets);
          if (HasFatalFailure()) return;
          ++cases;
        }
      }
    }
  }
  EXPECT_GT(cases, 100000);
}

TEST(BucketAssignment, CompleteOrder) {
  EXPECT_EQ(completeOrder({2, 0, 2}, 4), (std::vector<size_t>{2, 0, 3, 1}));
  EXPECT_EQ(completeOrder({}, 3), reverseOrder(3));
  EXPECT_THROW(completeOrder({5}, 3), Error);
}

}  // namespace
}  // namespace ringtrain::ddp
