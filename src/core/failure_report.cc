#include "ringtrain/core/failure_report.h"

#include <fcntl.h>
#include <unistd.h>

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
  bool recorded = false;  // the process's first failure was taken: later ones are not
  uint64_t next_id = 1;
  std::map<uint64_t, FailureListener> all;
};

Listeners& listeners() {
  static Listeners* l = new Listeners();  // never destroyed: a failure may be recorded during static destruction
  return *l;
}

void writeRecordFile(const FailureRecord& failure) noexcept {
  const char* path = std::getenv(kErrorFileEnv);
  if (path == nullptr || *path == '\0') return;
  try {
    const nlohmann::json record = {
        {"time_ns", failure.time_ns},
        {"exit_code", failure.exit_code},
        {"message", failure.message},
        {"follows_peer", failure.follows_peer},
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

bool FailureRecord::isConsequence() const { return follows_peer || isConsequentialExitCode(exit_code); }

void recordFailure(int exit_code, const std::string& message, bool follows_peer) noexcept {
  Listeners& l = listeners();
  std::lock_guard<std::mutex> lock(l.mu);  // two threads failing at once: the file and the listeners get one
  if (l.recorded) return;
  l.recorded = true;
  try {
    FailureRecord failure;
    failure.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    failure.exit_code = exit_code;
    failure.message = message;
    failure.follows_peer = follows_peer;
    writeRecordFile(failure);
    for (auto& [id, listener] : l.all) {
      try {
        listener(failure);
      } catch (...) {
      }
    }
  } catch (...) {  // out of memory copying the message: the rank's stderr still says it
  }
}

void recordFailure(const std::exception& e) noexcept {
  if (const auto* error = dynamic_cast<const Error*>(&e)) {
    recordFailure(error->exitCode(), error->what(), error->followsPeer());
    return;
  }
  try {
    recordFailure(kExitFailure, std::string("internal error: ") + e.what());
  } catch (...) {  // out of memory for the message
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
    r.follows_peer = record.value("follows_peer", false);
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool isConsequentialExitCode(int exit_code) { return exit_code == kExitCommFailure || exit_code == kExitTimeout; }

}  // namespace ringtrain
