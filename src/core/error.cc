#include "ringtrain/core/error.h"

#include <cstring>

namespace ringtrain::detail {
namespace {

// __FILE__ is absolute in out-of-tree builds; keep the part a reader can find in the repository.
const char* shortPath(const char* file) {
  for (const char* marker : {"/src/", "/include/", "/launch/", "/tests/"}) {
    if (const char* at = std::strstr(file, marker)) return at + 1;
  }
  return file;
}

}  // namespace

std::string checkMessage(const char* file, int line, const char* condition, const std::string& values,
                         const std::string& message) {
  std::string out = message;
  if (!out.empty()) out += " ";
  out += "(check failed: ";
  out += condition;
  if (!values.empty()) out += "; " + values;
  out += " at ";
  out += shortPath(file);
  out += ":" + std::to_string(line) + ")";
  return out;
}

}  // namespace ringtrain::detail
