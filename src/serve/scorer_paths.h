// The exact scorer's two paths, for tests and benchmarks that compare them; topK() picks one (scorer.h).
#pragma once

#include <cstdint>
#include <vector>

#include "ringtrain/serve/scorer.h"

namespace ringtrain::serve {

// Every query against every row in fp32 (the AVX-512, AVX2 or generic kernel).
std::vector<std::vector<Hit>> topKFp32Scan(const PackedCatalog& catalog, const std::vector<Query>& queries);

// An 8-bit integer pass (VPDPBUSD) keeps the rows that can still be in the top-k given a proven bound on its
// error, then those rows are rescored in fp32: the same answer as topKFp32Scan with the AVX-512 kernel, bit
// for bit. A query outside the bound's assumptions (a value that is not finite, a zero query, a norm near
// overflow) or with more than ~1,000 rows inside its window (a dense cluster of near-duplicates) is answered
// by topKFp32Scan. Needs catalog.hasInt8(), which a catalog has only where the CPU has AVX512-VNNI, every
// value is finite, a row's norm is far from overflow, some value is not zero and dim <= kMaxInt8Dim; it then
// holds about 2.3x the fp32 panels' memory (the panels for that fallback, a row-major copy, the 8-bit panels; a served model reads its
// rows from that copy instead of keeping its own).
std::vector<std::vector<Hit>> topKInt8Prefilter(const PackedCatalog& catalog, const std::vector<Query>& queries);

// Up to this many dimensions an integer score (at most dim x 127 x 127 in magnitude) is exact in a float,
// which the prefilter's heap and window compares rely on.
inline constexpr int64_t kMaxInt8Dim = 1024;

// A query in the integer pass's terms: value d is stored as round(q_d / scale) in [-127, 127], sent to the
// kernel as the unsigned byte stored + 128, four dimensions per 32-bit word. The pass scores a row as the
// integer I = sum_d stored(q_d) stored(v_d), which stands for scale x catalog.int8Scale() x I; `bound` is a
// proven bound on |that - the fp32 kernels' score| for every row of the catalog. covered is false where the
// bound does not apply (the query then takes the fp32 scan).
struct Int8Query {
  std::vector<uint32_t> words;  // catalog.quads() of them
  double scale = 0.0;
  double bound = 0.0;
  bool covered = false;
};
Int8Query quantizeQuery(const PackedCatalog& catalog, const float* query);

// The integer score of one row, computed one product at a time from the packed panels: the reference the
// tests hold the kernel and the bound to.
int64_t int8Dot(const PackedCatalog& catalog, const Int8Query& query, int64_t row);

// True when this CPU has AVX512-VNNI and RINGTRAIN_SCORER_SIMD does not cap it: catalogs then carry 8-bit
// panels and topK() takes the prefilter path.
bool int8PrefilterAvailable();

}  // namespace ringtrain::serve
