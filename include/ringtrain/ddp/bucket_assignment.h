// Pure arithmetic of gradient buckets: which dense parameters share one flat communication buffer.
//
// Parameters are visited in a given order (reverse registration order at first, the order in which
// gradients became ready after the first iteration). Each (dtype, device) pair has its own open bucket; a
// parameter joins the open bucket of its kind, and the bucket closes once it holds at least its limit
// (first_cap_bytes for the first bucket of each kind, cap_bytes afterwards). A parameter larger than the
// limit gets a bucket of its own. Buckets never mix dtype or device. Buckets are returned ordered by the
// position (in the visiting order) of their first parameter, which is the order they are launched in, and
// each bucket lists its parameters in visiting order (their offsets in the flat buffer follow that order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ringtrain::ddp {

struct BucketParam {
  size_t bytes = 0;
  int dtype = 0;   // any integer identifying the element type (c10::ScalarType as int)
  int device = -1; // -1: host; >= 0: CUDA ordinal
};

struct BucketLimits {
  size_t first_cap_bytes = size_t{1} << 20;
  size_t cap_bytes = size_t{25} << 20;
};

// `order` lists indices into `params`, each exactly once (throws ringtrain::Error otherwise).
// Returns the buckets as lists of parameter indices.
std::vector<std::vector<size_t>> assignBuckets(const std::vector<BucketParam>& params,
                                               const std::vector<size_t>& order, BucketLimits limits);

// Indices n-1, n-2, ..., 0: the order backward tends to produce gradients.
std::vector<size_t> reverseOrder(size_t n);

// Completes an observed ready-order (a prefix of parameters whose gradients arrived, in arrival order,
// possibly with duplicates removed) into a full visiting order: missing indices follow in reverse order.
std::vector<size_t> completeOrder(const std::vector<size_t>& observed, size_t n);

}  // namespace ringtrain::ddp
