// Settings two ranks must share, written as "key=value" items joined by a separator, and what differs
// between two such lines in words: every rank's check names the keys, not a line of values.
#pragma once

#include <string>

namespace ringtrain::detail {

// "k is a on rank 0 and b on rank 2; ..." for the items of `line_a` (rank `rank_a`) and `line_b` (rank
// `rank_b`) that differ, compared in order up to the shorter line (an item without '=' is its own key);
// "" when none does. Empty items (separators doubled) are skipped.
std::string settingsDifference(const std::string& line_a, int rank_a, const std::string& line_b, int rank_b,
                               char separator);

}  // namespace ringtrain::detail
