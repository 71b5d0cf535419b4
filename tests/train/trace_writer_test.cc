#include "train/run_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>

namespace ringtrain::train {
namespace {

TEST(TraceWriter, WritesChromeTraceEventsThatParse) {
  TraceWriter trace(3, 64);  // a reservation smaller than the events: the buffer grows
  EXPECT_TRUE(trace.empty());
  const auto t0 = std::chrono::steady_clock::now();
  const auto t1 = t0 + std::chrono::microseconds(1500);
  trace.span("forward \"quoted\"", t0, t1, R"({"bucket":7})");
  trace.counter("bytes sent", t1, 4096);
  EXPECT_FALSE(trace.empty());
  const auto path = std::filesystem::temp_directory_path() / ("trace-test-" + std::to_string(::getpid()) + ".json");
  trace.writeFile(path.string());
  std::ifstream in(path);
  const nlohmann::json doc = nlohmann::json::parse(in);
  std::filesystem::remove(path);
  const auto& events = doc.at("traceEvents");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].at("ph"), "M");
  EXPECT_EQ(events[0].at("args").at("name"), "rank 3");
  EXPECT_EQ(events[1].at("ph"), "X");
  EXPECT_EQ(events[1].at("pid"), 3);
  EXPECT_NEAR(events[1].at("dur").get<double>(), 1500.0, 0.01);
  EXPECT_EQ(events[1].at("args").at("bucket"), 7);
  EXPECT_EQ(events[2].at("ph"), "C");
  EXPECT_EQ(events[2].at("args").at("value"), 4096);
}

// Ranks on one host start their writers at different moments; the same instant must still get the same
// time in each rank's events, or the merged trace misplaces who waited for whom.
TEST(TraceWriter, WritersStartedAtDifferentMomentsGiveOneInstantOneTime) {
  TraceWriter early(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  TraceWriter late(1);
  const auto t0 = std::chrono::steady_clock::now();
  early.span("step", t0, t0 + std::chrono::microseconds(10));
  late.span("step", t0, t0 + std::chrono::microseconds(10));
  const auto first = nlohmann::json::parse("[" + early.eventsJson() + "]");
  const auto second = nlohmann::json::parse("[" + late.eventsJson() + "]");
  ASSERT_EQ(first.back().at("ph"), "X");
  ASSERT_EQ(second.back().at("ph"), "X");
  EXPECT_DOUBLE_EQ(first.back().at("ts").get<double>(), second.back().at("ts").get<double>());
}

}  // namespace
}  // namespace ringtrain::train
