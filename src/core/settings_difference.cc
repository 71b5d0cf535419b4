#include "core/settings_difference.h"

#include <sstream>
#include <vector>

namespace ringtrain::detail {
namespace {

std::vector<std::string> itemsOf(const std::string& line, char separator) {
  std::vector<std::string> items;
  std::istringstream in(line);
  for (std::string item; std::getline(in, item, separator);) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

}  // namespace

std::string settingsDifference(const std::string& line_a, int rank_a, const std::string& line_b, int rank_b,
                               char separator) {
  const std::vector<std::string> a = itemsOf(line_a, separator), b = itemsOf(line_b, separator);
  std::string out;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i] == b[i]) continue;
    const size_t eq_a = a[i].find('='), eq_b = b[i].find('=');
    const std::string value_b = eq_b == std::string::npos ? b[i] : b[i].substr(eq_b + 1);
    out += (out.empty() ? "" : "; ") + a[i].substr(0, eq_a) + " is " +
           (eq_a == std::string::npos ? a[i] : a[i].substr(eq_a + 1)) + " on rank " + std::to_string(rank_a) +
           " and " + value_b + " on rank " + std::to_string(rank_b);
  }
  return out;
}

}  // namespace ringtrain::detail
