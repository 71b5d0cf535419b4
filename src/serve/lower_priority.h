// Running a piece of background work so that it yields the CPU to everything else in the process.
#pragma once

#include <functional>

namespace ringtrain::serve {

// Runs `work` on a thread of its own whose nice value is `nice_increment` above the caller's (capped at
// 19; raising a nice value needs no privilege), waits for it, and rethrows what it threw. Under load the
// work gets the CPU that normal-priority threads leave; on an idle machine it runs at full speed.
void runWithLowerPriority(int nice_increment, const std::function<void()>& work);

// Raises the calling thread's nice value by `nice_increment` (capped at 19), best effort.
void lowerThisThreadPriority(int nice_increment);

// The calling thread's nice value (for tests and logs).
int currentThreadNice();

}  // namespace ringtrain::serve
