#include "testing/captured_log.h"

#include <algorithm>
#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "ringtrain/core/logging.h"

namespace ringtrain::testing {

// A sink that appends to a string under the sink's own mutex, which text() takes too.
class CapturedLog::Sink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::string text() {
    std::lock_guard<std::mutex> lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    text_.append(line.data(), line.size());
  }
  void flush_() override {}

 private:
  std::string text_;
};

CapturedLog::CapturedLog() : sink_(std::make_shared<Sink>()) { log::logger().sinks().push_back(sink_); }

CapturedLog::~CapturedLog() {
  auto& sinks = log::logger().sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
}

std::string CapturedLog::text() const { return sink_->text(); }

}  // namespace ringtrain::testing
