// Where an atomic write (a temporary file beside the target, fsync, rename over it) of a path must land.
#pragma once

#include <functional>
#include <string>
#include <string_view>

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

// One atomic write: the bytes go to tempPathFor(target), and commit() makes them the target's (fsync, rename
// over it, fsync of its directory), so that a reader, or the disk after a crash, has the old file or the new
// one whole and never a part. Destroyed without commit() (an error on the way), the temporary file goes;
// what an interrupted write of the same target left (removeStaleTempsOf) goes before a write begins.
// Failures are DataError naming the target, the step and the temporary file ("cannot write checkpoint
// <path>: writing <temp>: No space left on device"). A new file is 0666 less the umask.
class AtomicFile {
 public:
  // `target`: a path atomicWriteTarget() returned, in a directory that exists; `what` names the file in
  // errors ("checkpoint", "export").
  AtomicFile(std::string target, std::string what);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view bytes);
  void commit();
  const std::string& tempPath() const { return temp_; }

 private:
  [[noreturn]] void fail(const std::string& step, int error) const;

  std::string target_;
  std::string what_;
  std::string temp_;
  int fd_ = -1;  // open until commit()
};

}  // namespace ringtrain
