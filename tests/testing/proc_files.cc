#include "testing/proc_files.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>

namespace ringtrain::testing {
namespace {

std::string readFile(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

}  // namespace

std::string smapsEntryAt(const void* address) {
  std::istringstream smaps(readFile("/proc/self/smaps"));
  std::ostringstream start;
  start << std::hex << reinterpret_cast<uintptr_t>(address) << '-';
  std::string line, entry;
  bool in = false;
  while (std::getline(smaps, line)) {
    const bool header = line.find('-') != std::string::npos && line.find(':') > line.find(' ');
    if (header) {
      if (in) break;
      in = line.rfind(start.str(), 0) == 0;
    }
    if (in) entry += line + "\n";
  }
  return entry;
}

long long fieldOf(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + ":", 0) == 0) return std::stoll(line.substr(name.size() + 1));
  }
  return -1;
}

long long freeTwoMegabytePoolPages() {
  const std::string meminfo = readFile("/proc/meminfo");
  return fieldOf(meminfo, "Hugepagesize") == 2048 ? std::max(0LL, fieldOf(meminfo, "HugePages_Free")) : 0;
}

}  // namespace ringtrain::testing
