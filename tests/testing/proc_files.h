// What tests read from /proc about this process's memory: a mapping's smaps entry, a meminfo field.
#pragma once

#include <string>

namespace ringtrain::testing {

// The /proc/self/smaps entry of the mapping that starts at `address` ("" when none does).
std::string smapsEntryAt(const void* address);

// A "Name: value" field's number in such a text ("KernelPageSize", "HugePages_Free"), -1 when it has none.
long long fieldOf(const std::string& text, const std::string& name);

// The host's free 2 MiB pages in its reserved pool (/proc/meminfo); 0 where its default huge pages are
// another size or it has none.
long long freeTwoMegabytePoolPages();

}  // namespace ringtrain::testing
