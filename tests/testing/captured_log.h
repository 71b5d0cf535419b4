// What ringtrain's logger (log::logger()) says while a CapturedLog lives, kept beside its usual output for a test to read.
//
// spdlog's list of sinks is not guarded: adding or removing one while another thread logs is a data race
// (ThreadSanitizer reports it). Make the CapturedLog before the threads whose words it keeps start (a server,
// a loader), and let it end after they have stopped; declaring it first in the scope does both.
#pragma once

#include <memory>
#include <string>

namespace ringtrain::testing {

class CapturedLog {
 public:
  CapturedLog();
  ~CapturedLog();
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  // Everything said so far, one formatted line per message; safe while other threads still log.
  std::string text() const;

 private:
  class Sink;
  std::shared_ptr<Sink> sink_;
};

}  // namespace ringtrain::testing
