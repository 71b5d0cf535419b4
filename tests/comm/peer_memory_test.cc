// The same-host facilities on their own: the agreement (every rank decides alike, and anything off turns
// it off for all), copies out of a peer, and the notice queues (order, wrap-around, full queue, timeouts).
// Ranks are threads here (one pid); comm_mptest.cc covers processes, including a peer that exits.
#include "comm/peer_memory.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "ringtrain/core/error.h"
#include "ringtrain/dist/memory_store.h"

namespace ringtrain::comm {
namespace {

using namespace std::chrono_literals;

std::vector<PeerMemory> agreeAll(dist::Store& store, int size, bool wanted) {
  std::vector<PeerMemory> pm(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] { pm[r] = PeerMemory::agree(store, r, size, 10s, wanted); });
  }
  for (auto& t : threads) t.join();
  return pm;
}

TEST(PeerMemory, AgreedOnOneHostCopiesAndPassesNotices) {
  dist::MemoryStore store;
  auto pm = agreeAll(store, 3, true);
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(pm[r].enabled()) << "rank " << r << ": " << pm[r].reason();

  std::vector<uint8_t> source(100000);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint8_t>(i * 7);
  std::vector<uint8_t> copy(source.size());
  pm[2].read(0, source.data(), copy.data(), copy.size());
  EXPECT_EQ(copy, source);

  // More notices than the queue holds, with a consumer draining: order kept across the wrap-around.
  constexpr uint64_t kCount = 1000;
  std::thread consumer([&] {
    for (uint64_t i = 0; i < kCount; ++i) {
      const PeerNotice n = pm[1].take(0, 10s);
      ASSERT_EQ(n.message, i);
      ASSERT_EQ(n.value, i * 3);
    }
  });
  for (uint64_t i = 0; i < kCount; ++i) pm[0].post(1, PeerNotice{i, i * 3}, 10s);
  consumer.join();
}

TEST(PeerMemory, EmptyQueueAndFullQueueTimeOut) {
  dist::MemoryStore store;
  auto pm = agreeAll(store, 2, true);
  ASSERT_TRUE(pm[0].enabled()) << pm[0].reason();
  EXPECT_THROW(pm[1].take(0, 50ms), TimeoutError);
  // Nobody takes: the queue fills (256 notices), then a post waits and times out.
  int posted = 0;
  try {
    for (; posted < 1000; ++posted) pm[0].post(1, PeerNotice{static_cast<uint64_t>(posted), 0}, 50ms);
    ADD_FAILURE() << "posted 1000 notices to a queue nobody reads";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(posted, 256);
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pm[1].take(0, 1s).message, 0u);
}

// A poll longer than the wait's timeout ends at the timeout: comm.spin_us never stretches comm.timeout_s.
TEST(PeerMemory, APollLongerThanTheTimeoutEndsAtTheTimeout) {
  dist::MemoryStore store;
  auto pm = agreeAll(store, 2, true);
  ASSERT_TRUE(pm[1].enabled()) << pm[1].reason();
  pm[1].setSpin(30s);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(pm[1].take(0, 50ms), TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(PeerMemory, OffWhenNotWantedOrAlone) {
  dist::MemoryStore store;
  auto off = agreeAll(store, 2, false);
  EXPECT_FALSE(off[0].enabled());
  EXPECT_NE(off[0].reason().find("same_host_copy"), std::string::npos) << off[0].reason();
  EXPECT_THROW(off[0].post(1, PeerNotice{}, 10ms), CommError);
  dist::MemoryStore alone;
  EXPECT_FALSE(PeerMemory::agree(alone, 0, 1, 1s, true).enabled());
}

// A peer on another host (its record names another kernel boot): the rank that sees it says no, and every
// rank follows that verdict.
TEST(PeerMemory, APeerElsewhereTurnsItOffForAll) {
  dist::MemoryStore store;
  store.set("peer_memory/2", dist::toBytes("another-boot-id 1 4096 7 -1"));
  store.set("peer_memory_ok/2", dist::toBytes("ok"));
  std::vector<PeerMemory> pm(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) threads.emplace_back([&, r] { pm[r] = PeerMemory::agree(store, r, 3, 10s, true); });
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(pm[r].enabled()) << "rank " << r;
    EXPECT_NE(pm[r].reason().find("rank 2 runs on another host"), std::string::npos) << pm[r].reason();
  }
}

}  // namespace
}  // namespace ringtrain::comm
