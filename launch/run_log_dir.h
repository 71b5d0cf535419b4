// `ringrun --log-dir DIR`: each launch writes its ranks' logs into a folder of its own under DIR, so that a
// DIR reused from run to run keeps every earlier run's logs whole (writing DIR/attempt<A> directly
// truncated the last run's files and left its later attempts beside the new ones).
#pragma once

#include <ctime>
#include <string>

namespace ringtrain::launch {

struct RunLogDir {
  std::string path;     // DIR/<name>: this launch's attempt<A>/rank<R> folders go in here
  std::string warning;  // non-empty when DIR/latest could not be pointed at it (said, not fatal)
};

// Creates DIR (and parents) and DIR/<start time as YYYYmmdd-HHMMSS, local time>[-node<N> when the job spans
// several nodes, so that nodes sharing DIR on one file system do not meet in one folder], with ".1", ".2",
// ... appended while the name is taken; then, on node 0, points the symbolic link DIR/latest at it (replaced
// atomically; a DIR/latest that is not a symbolic link is left alone, with a warning). Throws ConfigError
// naming the folder when it cannot be created.
RunLogDir makeRunLogDir(const std::string& dir, std::time_t start, int node_rank, int nnodes);

}  // namespace ringtrain::launch
