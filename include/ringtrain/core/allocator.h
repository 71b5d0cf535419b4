// Process-wide settings of the C allocator (glibc malloc) for training and serving loops.
#pragma once

namespace ringtrain {

// Keeps memory that a step frees inside the process so the next step reuses it, instead of glibc's
// default of serving every block of 128 KiB or more with a fresh mmap() and unmapping it on free().
// Why: a training step allocates and frees the same large blocks every time (sparse gradient rows,
// packed messages, optimizer scratch), and on virtual machines such as this project's dev and CI machines
// each freshly mapped page costs microseconds to fault in: that made sparse synchronization 5-20x slower
// than its arithmetic. Call once, early in main(), before threads start. The price is a higher resident
// size (freed memory stays mapped, up to the largest step's working set). Setting the environment
// variable RINGTRAIN_MALLOC_DEFAULTS=1 leaves glibc's defaults alone (for comparison).
// Returns true when the settings were applied.
bool keepFreedMemoryInProcess();

// Gives the memory freed so far back to the OS (glibc's malloc_trim), for a one-time release that the
// settings above would keep: the private copies of tables that moved into memory shared by the ranks.
void releaseFreedMemory();

}  // namespace ringtrain
