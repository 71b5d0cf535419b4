#include "ringtrain/core/failure_report.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ringtrain/core/error.h"

namespace ringtrain {
namespace {

struct Listeners {
  std::mutex mu;  // held while listeners run: remove waits for a call in progress
  uint64_t next_id = 1;
  std::map<uint64_t, FailureListener> all;
};

Listeners& listeners() {
  static Listeners* l = new Listeners();  // never destroyed: a failure may be recorded during static destruction
  return *l;
}

void writeRecordFile(int exit_code, const std::string& message) noexcept {
  const char* path = std::getenv(kErrorFileEnv);
  if (path == nullptr || *path == '\0') return;
  try {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const nlohmann::json record = {
        {"time_ns", std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()},
        {"exit_code", exit_code},
        {"message", message},
    };
    // dump() with replacement: a message cut in the middle of a UTF-8 sequence must not lose the record.
    const std::string text = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    const std::string temp = std::string(path) + ".tmp";
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!written || std::rename(temp.c_str(), path) != 0) ::unlink(temp.c_str());
  } catch (...) {
    // Only the launcher's report is poorer for it: the rank's own message still goes to its stderr.
  }
}

}  // namespace

void recordFailure(int exit_code, const std::string& message) noexcept {
  static std::atomic<bool> recorded{false};
  if (!recorded.exchange(true)) writeRecordFile(exit_code, message);
  Listeners& l = listeners();
  std::lock_guard<std::mutex> lock(l.mu);
  for (auto& [id, listener] : l.all) {
    try {
      listener(exit_code, message);
    } catch (...) {
    }
  }
}

uint64_t addFailureListener(FailureListener listener) {
  Listeners& l = listeners();
  std::lock_guard<std::mutex> lock(l.mu);
  const uint64_t id = l.next_id++;
  l.all.emplace(id, std::move(listener));
  return id;
}

void removeFailureListener(uint64_t id) {
  Listeners& l = listeners();
  std::lock_guard<std::mutex> lock(l.mu);
  l.all.erase(id);
}

std::optional<FailureRecord> readFailureRecord(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  try {
    const nlohmann::json record = nlohmann::json::parse(text.str());
    FailureRecord r;
    r.time_ns = record.at("time_ns").get<int64_t>();
    r.exit_code = record.at("exit_code").get<int>();
    r.message = record.at("message").get<std::string>();
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool isConsequentialExitCode(int exit_code) { return exit_code == kExitCommFailure || exit_code == kExitTimeout; }

}  // namespace ringtrain
