// Where an atomic write (a temporary file beside the target, fsync, rename over it) of a path must land.
#pragma once

#include <functional>
#include <string>

namespace ringtrain {

// `path` itself, or, when it is a symbolic link, what the link points to (links followed to the end): a
// rename over the link would replace the link and leave its target as it was. A target that exists and is
// not a regular file (a directory, device, FIFO or socket, such as /dev/null or /dev/stdout's terminal) is
// refused with DataError naming it: renaming over it would put a plain file in its place (or fail, for a
// directory).
std::string atomicWriteTarget(const std::string& path);

// Removes from `dir` the temp files that interrupted atomic writes left: each regular file whose name is
// stem_of(name) followed by a pid ("" from stem_of: not such a file) and whose writer is gone, with a warning
// ("removed P (S MB), left by <what> that was interrupted"). A file with this process's pid counts as a gone
// writer's too (a relaunched container often gets its predecessor's pid): call it before writing one's own.
// A writer is judged by kill(pid, 0) on this host.
void removeTempsOfGoneWriters(const std::string& dir, const std::function<std::string(const std::string&)>& stem_of,
                              const std::string& what);

// The temporary file an atomic write of `target` (a path atomicWriteTarget returned) goes through:
// ".<name>.<kind>.<pid>" beside it, hidden, and found again by removeStaleTempsOf after a crash.
std::string tempPathFor(const std::string& target, const std::string& kind = "tmp");
// removeTempsOfGoneWriters for tempPathFor(target, kind)'s names.
void removeStaleTempsOf(const std::string& target, const std::string& what, const std::string& kind = "tmp");

}  // namespace ringtrain
