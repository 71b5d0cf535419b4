// Memory a failed collective may still touch, kept until the process ends.
//
// A collective that fails or times out can leave a send or receive posted on its buffers (MPI cannot cancel
// one) or a same-host peer still copying from them; memory freed and reused meanwhile would be corrupted
// by them, or leak their writes into unrelated data. So what owns such memory is handed here instead of
// being freed. The list is reachable from a global and never destroyed: no destructor runs at exit while a
// stale operation may still write, and leak checkers (scripts/sanitize.sh address) do not count it.
#pragma once

#include <memory>

namespace ringtrain::comm {

// Keeps `owner` (and so what it owns) alive for the rest of the process. Null is ignored. Thread-safe.
void keepForGood(std::shared_ptr<const void> owner);

}  // namespace ringtrain::comm
