// Where an atomic write (a temporary file beside the target, fsync, rename over it) of a path must land.
#pragma once

#include <string>

namespace ringtrain {

// `path` itself, or, when it is a symbolic link, what the link points to (links followed to the end): a
// rename over the link would replace the link and leave its target as it was. A target that exists and is
// not a regular file (a directory, device, FIFO or socket, such as /dev/null or /dev/stdout's terminal) is
// refused with DataError naming it: renaming over it would put a plain file in its place (or fail, for a
// directory).
std::string atomicWriteTarget(const std::string& path);

// Whether `name` is the temp file of an atomic write named `stem` followed by its writer's pid, and that
// writer is gone: a file an interrupted write left behind. A file with this process's pid counts as a gone
// writer's too (a relaunched container often gets its predecessor's pid): ask before writing one's own.
bool tempOfGoneWriter(const std::string& name, const std::string& stem);

}  // namespace ringtrain
