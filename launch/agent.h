// The per-node agent behind ringrun: meets the other nodes in the job's store, starts this node's ranks,
// pumps their output, and stops everything when one fails, is interrupted, or another node fails.
//
// Store protocol (keys under "ringrun/"; node 0's ringrun hosts the store for the whole job):
//   node/<n>             set once by node n: its agent id, nproc and max-restarts; all must agree
//   a<A>/ready/<n>       node n is ready to start attempt A (a barrier, so restarts start together)
//   a<A>/end             the attempt's outcome, first writer wins (compare-and-set): "ok" (set by the
//                        node whose success made the count reach nnodes), "fail ..." or "interrupted ..."
//   a<A>/succeeded       count of nodes whose ranks all exited 0
//   left, all-left       nodes done with the job; node 0 keeps the store up until all have left
// Every node watches a<A>/end from a thread; a "fail"/"interrupted" outcome written by another node stops
// the local ranks, so a failure anywhere tears the whole job down. If node 0 disappears, the others lose
// the store and stop too.
#pragma once

#include <string>

#include "launch_options.h"

namespace ringtrain::launch {

// Runs the job; returns ringrun's exit code (0, the first failed rank's code or 128+signal, 1 for a failure
// on another node). Throws ringtrain errors for rendezvous problems (ConfigError, CommError, TimeoutError).
int runAgent(const LaunchOptions& options);

// Queues "ringrun: error: <message>" on stderr (console.h), behind ringrun's other output.
void sayError(const std::string& message);
// Lets termination signals end ringrun again and writes out everything queued: call last, before exiting
// with `exit_code`. After a second signal (the user asked twice to stop) it waits at most a second for a
// reader that does not read, then exits with `exit_code` at once.
void finishOutput(int exit_code);

}  // namespace ringtrain::launch
