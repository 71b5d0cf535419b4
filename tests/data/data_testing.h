// Helpers shared by the data tests: temporary corpora and a deadline for calls that might hang.
#pragma once

#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "testing/command.h"

namespace ringtrain::data::testing_helpers {

inline std::string writeFile(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out << text;
  return path;
}

// Runs `fn` on a detached thread; true when it returned within `limit`. A hang fails the test instead
// of stalling it (the stuck thread is abandoned; ctest's TIMEOUT is the last resort).
inline bool finishesWithin(std::function<void()> fn, std::chrono::milliseconds limit) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> f = done->get_future();
  std::thread([fn = std::move(fn), done] {
    try {
      fn();
    } catch (...) {
    }
    done->set_value();
  }).detach();
  return f.wait_for(limit) == std::future_status::ready;
}

}  // namespace ringtrain::data::testing_helpers
