// The exact scorer's two paths, for tests and benchmarks that compare them; topK() picks one (scorer.h).
#pragma once

#include <cstdint>
#include <vector>

#include "ringtrain/serve/scorer.h"

namespace ringtrain::serve {

// Every query against every row in fp32 (the AVX-512, AVX2 or generic kernel).
std::vector<std::vector<Hit>> topKFp32Scan(const PackedCatalog& catalog, const std::vector<Query>& queries);

// A bfloat16 pass (VDPBF16PS, twice the products per instruction and half the bytes of fp32) keeps the
// rows that can still be in the top-k given a proven bound on its error, then those rows are rescored in
// fp32: the same answer as topKFp32Scan with the AVX-512 kernel, bit for bit. A query outside the bound's
// assumptions (a value not finite or denormal, a norm near overflow) or with more than ~1,000 rows inside
// its window (a zero query, a dense cluster) is answered by topKFp32Scan. Needs catalog.hasBf16(), which
// a catalog has only where the CPU has AVX512-BF16 and every value is finite, normal or zero; it then
// holds 2.5x the fp32 panels' memory (the panels for that fallback, a row-major copy, the bfloat16 panels;
// a served model reads its rows from that copy instead of keeping its own).
std::vector<std::vector<Hit>> topKBf16Prefilter(const PackedCatalog& catalog, const std::vector<Query>& queries);

// The bound on |bfloat16 score - fp32 score| for one query of this norm against rows of at most this norm.
double bf16ScoreMargin(int64_t dim, double query_norm, double max_row_norm);

// True when this CPU has AVX512-BF16 and RINGTRAIN_SCORER_SIMD does not cap it: catalogs then carry
// bfloat16 panels and topK() takes the prefilter path.
bool bf16PrefilterAvailable();

}  // namespace ringtrain::serve
