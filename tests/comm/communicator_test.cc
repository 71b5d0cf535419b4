// Every collective of the Gloo backend at world sizes 1-4 with ranks as threads, checked against closed
// forms: rank r contributes r + 1 + (i % 5) at element i, so sum = n(n+1)/2 + n(i%5), max = n + i%5,
// min = 1 + i%5 (small integers: exact in every dtype, bfloat16 and float16 included).
#include "ringtrain/comm/communicator.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>

#include "ringtrain/comm/factory.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/dist/memory_store.h"
#include "testing/rank_threads.h"

namespace ringtrain::comm {
namespace {

using testing::runWithCommunicators;
using testing::testCommOptions;
using testing::expectAllOk;

// Values as doubles <-> raw buffer of any dtype.
std::vector<uint8_t> encode(const std::vector<double>& values, DataType dtype) {
  std::vector<uint8_t> out(values.size() * elementSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    void* p = out.data() + i * elementSize(dtype);
    switch (dtype) {
      case DataType::kFloat32:
        *static_cast<float*>(p) = static_cast<float>(values[i]);
        break;
      case DataType::kFloat64:
        *static_cast<double*>(p) = values[i];
        break;
      case DataType::kInt64:
        *static_cast<int64_t*>(p) = static_cast<int64_t>(values[i]);
        break;
      case DataType::kInt32:
        *static_cast<int32_t*>(p) = static_cast<int32_t>(values[i]);
        break;
      case DataType::kUInt8:
        *static_cast<uint8_t*>(p) = static_cast<uint8_t>(values[i]);
        break;
      case DataType::kFloat16:
        *static_cast<uint16_t*>(p) = floatToHalf(static_cast<float>(values[i]));
        break;
      case DataType::kBFloat16:
        *static_cast<uint16_t*>(p) = floatToBFloat16(static_cast<float>(values[i]));
        break;
    }
  }
  return out;
}

double decodeAt(const std::vector<uint8_t>& raw, size_t i, DataType dtype) {
  const void* p = raw.data() + i * elementSize(dtype);
  switch (dtype) {
    case DataType::kFloat32:
      return *static_cast<const float*>(p);
    case DataType::kFloat64:
      return *static_cast<const double*>(p);
    case DataType::kInt64:
      return static_cast<double>(*static_cast<const int64_t*>(p));
    case DataType::kInt32:
      return *static_cast<const int32_t*>(p);
    case DataType::kUInt8:
      return *static_cast<const uint8_t*>(p);
    case DataType::kFloat16:
      return halfToFloat(*static_cast<const uint16_t*>(p));
    case DataType::kBFloat16:
      return bfloat16ToFloat(*static_cast<const uint16_t*>(p));
  }
  return 0;
}

double contribution(int rank, size_t i) { return rank + 1 + static_cast<double>(i % 5); }

double expected(ReduceOp op, int n, size_t i, DataType dtype) {
  const double k = static_cast<double>(i % 5);
  switch (op) {
    case ReduceOp::kSum:
      return n * (n + 1) / 2.0 + n * k;
    case ReduceOp::kMax:
      return n + k;
    case ReduceOp::kMin:
      return 1 + k;
    case ReduceOp::kAverage: {
      const double avg = (n * (n + 1) / 2.0 + n * k) / n;
      if (dtype == DataType::kInt64 || dtype == DataType::kInt32) return static_cast<double>(static_cast<int64_t>(avg));
      if (dtype == DataType::kFloat16) return halfToFloat(floatToHalf(static_cast<float>(avg)));
      if (dtype == DataType::kBFloat16) return bfloat16ToFloat(floatToBFloat16(static_cast<float>(avg)));
      if (dtype == DataType::kFloat32) return static_cast<float>(avg);
      return avg;
    }
  }
  return 0;
}

// Counts ranks that are done; a rank that must stay connected waits for the others on it.
class Countdown {
 public:
  explicit Countdown(int n) : left_(n) {}
  void arrive() {
    std::lock_guard<std::mutex> lock(mu_);
    --left_;
    cv_.notify_all();
  }
  bool waitFor(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return left_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int left_;
};

bool glooBuilt() {
  for (const auto& b : builtBackends()) {
    if (b == "gloo") return true;
  }
  return false;
}

// The thread tests run over Gloo; builds without it (the device machine) skip them.
class GlooComm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!glooBuilt()) GTEST_SKIP() << "Gloo backend not built";
  }
};

class WorldSize : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!glooBuilt()) GTEST_SKIP() << "Gloo backend not built";
  }
};
INSTANTIATE_TEST_SUITE_P(Comm, WorldSize, ::testing::Values(1, 2, 3, 4));

TEST_P(WorldSize, AllreduceEveryDtypeOpAndOddSize) {
  const int n = GetParam();
  const DataType dtypes[] = {DataType::kFloat32, DataType::kFloat64, DataType::kBFloat16, DataType::kFloat16,
                             DataType::kInt64};
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin};
  const size_t counts[] = {0, 1, 7, 1000};
  for (const char* algorithm : {"native", "ring"}) {
    SCOPED_TRACE(algorithm);
    auto options = testCommOptions();
    options.allreduce_algorithm = algorithm;
    expectAllOk(runWithCommunicators(n, options, [&](Communicator& comm) {
      for (DataType dtype : dtypes) {
        for (ReduceOp op : ops) {
          for (size_t count : counts) {
            std::vector<double> mine(count);
            for (size_t i = 0; i < count; ++i) mine[i] = contribution(comm.rank(), i);
            std::vector<uint8_t> raw = encode(mine, dtype);
            comm.allreduce(Buffer{raw.data(), count, dtype}, op);
            for (size_t i = 0; i < count; ++i) {
              ASSERT_EQ(decodeAt(raw, i, dtype), expected(op, n, i, dtype))
                  << toString(dtype) << " " << toString(op) << " count " << count << " element " << i;
            }
          }
        }
      }
    }));
  }
}

TEST_P(WorldSize, LargeOddAllreduceAsyncInIssueOrder) {
  const int n = GetParam();
  const size_t count = 1000003;
  for (const char* algorithm : {"native", "ring"}) {
    SCOPED_TRACE(algorithm);
    auto options = testCommOptions();
    options.allreduce_algorithm = algorithm;
    expectAllOk(runWithCommunicators(n, options, [&](Communicator& comm) {
      std::vector<float> a(count), b(count);
      for (size_t i = 0; i < count; ++i) {
        a[i] = static_cast<float>(contribution(comm.rank(), i));
        b[i] = static_cast<float>(comm.rank());
      }
      const uint64_t first = comm.nextSequence();
      WorkPtr wa = comm.allreduceAsync(Buffer{a.data(), count, DataType::kFloat32}, ReduceOp::kSum);
      WorkPtr wb = comm.allreduceAsync(Buffer{b.data(), count, DataType::kFloat32}, ReduceOp::kMax);
      EXPECT_EQ(comm.nextSequence(), first + 2);
      wb->wait(comm.timeout());
      EXPECT_TRUE(wa->isCompleted());  // issue order
      wa->wait(comm.timeout());
      for (size_t i = 0; i < count; i += 9973) {
        ASSERT_EQ(a[i], static_cast<float>(expected(ReduceOp::kSum, n, i, DataType::kFloat32)));
        ASSERT_EQ(b[i], static_cast<float>(n - 1));
      }
      ASSERT_EQ(a[count - 1], static_cast<float>(expected(ReduceOp::kSum, n, count - 1, DataType::kFloat32)));
    }));
  }
}

TEST_P(WorldSize, BroadcastFromEveryRoot) {
  const int n = GetParam();
  expectAllOk(runWithCommunicators(n, testCommOptions(), [&](Communicator& comm) {
    for (int root = 0; root < n; ++root) {
      for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{100003}}) {
        std::vector<int64_t> v(count);
        for (size_t i = 0; i < count; ++i) v[i] = comm.rank() * 1000000 + static_cast<int64_t>(i);
        comm.broadcast(Buffer{v.data(), count, DataType::kInt64}, root);
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(v[i], root * 1000000 + static_cast<int64_t>(i));
      }
    }
  }));
}

TEST_P(WorldSize, AllgatherPlacesEachRankAtItsOffset) {
  const int n = GetParam();
  expectAllOk(runWithCommunicators(n, testCommOptions(), [&](Communicator& comm) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{10001}}) {
      std::vector<double> send(count);
      for (size_t i = 0; i < count; ++i) send[i] = comm.rank() + 0.5 * static_cast<double>(i);
      std::vector<double> recv(count * n, -1);
      comm.allgather(Buffer{send.data(), count, DataType::kFloat64},
                     Buffer{recv.data(), count * n, DataType::kFloat64});
      for (int r = 0; r < n; ++r) {
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(recv[r * count + i], r + 0.5 * static_cast<double>(i));
      }
    }
  }));
}

TEST_P(WorldSize, AllgatherBytesOfDifferentLengths) {
  const int n = GetParam();
  expectAllOk(runWithCommunicators(n, testCommOptions(), [&](Communicator& comm) {
    for (int round = 0; round < 3; ++round) {
      // rank r sends (r * 3 + round) bytes, rank 0 in round 0 sends none
      std::vector<uint8_t> mine(comm.rank() * 3 + round);
      std::iota(mine.begin(), mine.end(), static_cast<uint8_t>(comm.rank() * 10));
      const auto all = comm.allgatherBytes(mine);
      ASSERT_EQ(all.size(), static_cast<size_t>(n));
      for (int r = 0; r < n; ++r) {
        std::vector<uint8_t> want(r * 3 + round);
        std::iota(want.begin(), want.end(), static_cast<uint8_t>(r * 10));
        ASSERT_EQ(all[r], want) << "round " << round << " from rank " << r;
      }
    }
  }));
}

// Lengths that cross the Gloo backend's posted-receive capacity (64 KiB at first, then grown to the longest
// message seen): a long message after short ones, a short one after the growth, a longer one again, empty.
TEST_P(WorldSize, AllgatherBytesAcrossTheReceiveCapacity) {
  const int n = GetParam();
  const std::vector<size_t> base = {10, (200 << 10) + 7, 100, (3 << 20) + 1, 0, (1 << 20)};
  expectAllOk(runWithCommunicators(n, testCommOptions(), [&](Communicator& comm) {
    for (size_t round = 0; round < base.size(); ++round) {
      auto length = [&](int r) { return base[round] == 0 && r % 2 == 0 ? 0 : base[round] + 1000 * r; };
      auto byte = [&](int r, size_t i) { return static_cast<uint8_t>((r * 31 + i * 7 + round) & 0xff); };
      std::vector<uint8_t> mine(length(comm.rank()));
      for (size_t i = 0; i < mine.size(); ++i) mine[i] = byte(comm.rank(), i);
      const auto all = comm.allgatherBytes(mine);
      ASSERT_EQ(all.size(), static_cast<size_t>(n));
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(all[r].size(), length(r)) << "round " << round << " from rank " << r;
        for (size_t i = 0; i < all[r].size(); ++i) {
          ASSERT_EQ(all[r][i], byte(r, i)) << "round " << round << " from rank " << r << " byte " << i;
        }
      }
    }
  }));
}

// The reusable exchange of the sparse-row sync, over same-host copies and over Gloo's own transport: each
// peer's bytes land in all[peer] whether the lengths grow, shrink or vanish from round to round; all[me]
// stays empty; it keeps step with allgatherBytes in between (one sequence of collectives).
TEST_P(WorldSize, AllgatherBytesIntoReusesOneExchange) {
  const int n = GetParam();
  for (bool same_host : {true, false}) {
    SCOPED_TRACE(same_host ? "same-host copy" : "gloo transport");
    auto options = testCommOptions();
    options.same_host_copy = same_host;
    expectAllOk(runWithCommunicators(n, options, [&](Communicator& comm) {
      const std::vector<size_t> base = {300000, 17, 0, (1 << 20) + 3, 5};
      auto exchange = std::make_shared<ByteExchange>();
      auto length = [&](size_t round, int r) { return base[round] == 0 ? 0 : base[round] + 11 * r; };
      auto byte = [&](size_t round, int r, size_t i) { return static_cast<uint8_t>((r * 37 + i * 3 + round) & 0xff); };
      for (size_t round = 0; round < base.size(); ++round) {
        exchange->mine.resize(length(round, comm.rank()));
        for (size_t i = 0; i < exchange->mine.size(); ++i) exchange->mine[i] = byte(round, comm.rank(), i);
        comm.allgatherBytesInto(exchange);
        ASSERT_EQ(exchange->all.size(), static_cast<size_t>(n));
        for (int r = 0; r < n; ++r) {
          if (r == comm.rank()) {
            EXPECT_TRUE(exchange->all[r].empty());
            continue;
          }
          ASSERT_EQ(exchange->all[r].size(), length(round, r)) << "round " << round << " from rank " << r;
          for (size_t i = 0; i < exchange->all[r].size(); ++i) {
            ASSERT_EQ(exchange->all[r][i], byte(round, r, i)) << "round " << round << " rank " << r << " byte " << i;
          }
        }
        const auto plain = comm.allgatherBytes(std::vector<uint8_t>(3, static_cast<uint8_t>(comm.rank())));
        for (int r = 0; r < n; ++r) ASSERT_EQ(plain[r], std::vector<uint8_t>(3, static_cast<uint8_t>(r)));
      }
    }));
  }
}

TEST_P(WorldSize, AllToAllBytesPersonalized) {
  const int n = GetParam();
  expectAllOk(runWithCommunicators(n, testCommOptions(), [&](Communicator& comm) {
    std::vector<std::vector<uint8_t>> send(n);
    for (int peer = 0; peer < n; ++peer) {
      // (from, to) encoded; length varies, and 0 when from + to is even and peer != me
      const size_t len = (comm.rank() + peer) % 2 == 0 && peer != comm.rank() ? 0 : 1 + comm.rank() + 2 * peer;
      send[peer].assign(len, static_cast<uint8_t>(comm.rank() * 16 + peer));
    }
    const auto got = comm.allToAllBytes(send);
    ASSERT_EQ(got.size(), static_cast<size_t>(n));
    for (int from = 0; from < n; ++from) {
      const size_t len = (from + comm.rank()) % 2 == 0 && from != comm.rank() ? 0 : 1 + from + 2 * comm.rank();
      ASSERT_EQ(got[from], std::vector<uint8_t>(len, static_cast<uint8_t>(from * 16 + comm.rank())));
    }
  }));
}

// However long the waits poll before they sleep (comm.spin_us: not at all, and longer than any wait here, so
// that the communication thread also polls between collectives), the collectives give the same bytes, and
// a communicator whose thread idles polling is destroyed promptly (a poll that missed the stop would hang).
TEST_P(WorldSize, CollectivesAreTheSameWhateverTheWaitsPoll) {
  const int n = GetParam();
  for (const int spin_us : {0, 20000}) {
    SCOPED_TRACE(spin_us);
    auto options = testCommOptions();
    options.spin_us = spin_us;
    std::atomic<double> slowest_destroy{0};
    expectAllOk(runWithCommunicators(n, options, [&](Communicator& comm) {
      for (int round = 0; round < 5; ++round) {
        std::vector<float> v(1000, static_cast<float>(comm.rank() + 1));
        comm.allreduceAsync(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum)->wait(comm.timeout());
        ASSERT_EQ(v[999], n * (n + 1) / 2.0f);
        std::vector<std::vector<uint8_t>> send(n);
        for (int peer = 0; peer < n; ++peer) send[peer].assign(3, static_cast<uint8_t>(comm.rank() * 16 + peer));
        const auto got = comm.allToAllBytes(send);
        for (int from = 0; from < n; ++from) {
          ASSERT_EQ(got[from], std::vector<uint8_t>(3, static_cast<uint8_t>(from * 16 + comm.rank())));
        }
        comm.barrier();
      }
    }));
    // Destroyed while its thread idles (polling, with 20000).
    dist::MemoryStore store;
    auto results = testing::runRankThreads(n, [&](int rank) {
      dist::ProcessInfo process;
      process.rank = rank;
      process.world_size = n;
      std::unique_ptr<Communicator> comm = makeCommunicator(options, process, store);
      comm->barrier();
      const auto start = std::chrono::steady_clock::now();
      comm.reset();
      const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      double seen = slowest_destroy.load();
      while (took > seen && !slowest_destroy.compare_exchange_weak(seen, took)) {}
    });
    expectAllOk(results);
    EXPECT_LT(slowest_destroy.load(), 2.0) << "a communicator took " << slowest_destroy.load() << " s to destroy";
  }
}

// comm.spin_us reaches the waits. A waiting caller that polls never sleeps: its thread has no voluntary
// context switch (a poll's sched_yield counts as involuntary), however busy the machine; one that does not
// poll, or whose poll ran out, sleeps. Rank 0 waits in a barrier for a peer that comes `late`.
TEST_F(GlooComm, WaitsPollForSpinUsThenSleep) {
  struct Case {
    int spin_us;
    int late_ms;
    bool polls_throughout;
  };
  for (const Case c : {Case{0, 50, false}, Case{200000, 50, true}, Case{100000, 500, false}}) {
    SCOPED_TRACE(::testing::Message() << "comm.spin_us " << c.spin_us << ", peer " << c.late_ms << " ms late");
    auto options = testCommOptions();
    options.spin_us = c.spin_us;
    long slept = -1;
    double burnt_ms = -1;
    expectAllOk(runWithCommunicators(2, options, [&](Communicator& comm) {
      EXPECT_EQ(comm.waitPoll(), std::chrono::microseconds(c.spin_us));
      comm.barrier();  // both connected
      if (comm.rank() == 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(c.late_ms));
        comm.barrier();
        return;
      }
      rusage before{}, after{};
      timespec cpu_before{}, cpu_after{};
      getrusage(RUSAGE_THREAD, &before);
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_before);
      comm.barrier();
      getrusage(RUSAGE_THREAD, &after);
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_after);
      slept = after.ru_nvcsw - before.ru_nvcsw;
      burnt_ms = (cpu_after.tv_sec - cpu_before.tv_sec) * 1e3 + (cpu_after.tv_nsec - cpu_before.tv_nsec) / 1e6;
    }));
    if (c.polls_throughout) {
      EXPECT_EQ(slept, 0) << "the waiting caller slept instead of polling";
    } else {
      EXPECT_GE(slept, 1) << "the waiting caller never slept";
    }
    if (c.spin_us == 0) EXPECT_LT(burnt_ms, 30.0) << "waits polled with comm.spin_us 0";
    // Polling a 100 ms budget, caller and communication thread burn at most ~200 ms of the 500 ms wait
    // (both all along: 1000 ms).
    if (c.late_ms == 500) EXPECT_LT(burnt_ms, 700.0) << "the waits polled on past comm.spin_us";
  }
}

// A wait whose poll is longer than its timeout still ends at the timeout: the poll is part of the wait.
TEST_F(GlooComm, APollingWaitEndsAtItsTimeout) {
  auto options = testCommOptions();
  options.spin_us = 1000000;
  Countdown finished(1);
  double waited_ms = -1;
  expectAllOk(runWithCommunicators(2, options, [&](Communicator& comm) {
    if (comm.rank() == 1) {  // connected, never joins
      EXPECT_TRUE(finished.waitFor(std::chrono::seconds(30)));
      return;
    }
    std::vector<float> v(16, 1.0f);
    WorkPtr work = comm.allreduceAsync(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(work->wait(std::chrono::milliseconds(1000)), TimeoutError);
    waited_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    finished.arrive();
  }));
  EXPECT_GE(waited_ms, 1000.0);
  EXPECT_LT(waited_ms, 1700.0) << "the poll (1 s) was added to the timeout (1 s)";
}

// No rank leaves a barrier before the last one enters it, with same-host copy (where the agreement check's
// notices are the barrier) and without (Gloo's barrier).
TEST_P(WorldSize, BarrierWaitsForTheLastRank) {
  const int n = GetParam();
  for (const bool same_host : {true, false}) {
    auto options = testCommOptions();
    options.same_host_copy = same_host;
    std::atomic<int> entered{0};
    expectAllOk(runWithCommunicators(n, options, [&](Communicator& comm) {
      if (comm.rank() == n - 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      entered.fetch_add(1);
      comm.barrier();
      EXPECT_EQ(entered.load(), n) << "rank " << comm.rank() << " left the barrier early (same-host " << same_host << ")";
    }));
  }
}

TEST_P(WorldSize, BarrierAndPointToPointRing) {
  const int n = GetParam();
  expectAllOk(runWithCommunicators(n, testCommOptions(), [&](Communicator& comm) {
    comm.barrier();
    if (n == 1) return;
    const int right = (comm.rank() + 1) % n;
    const int left = (comm.rank() + n - 1) % n;
    // Two tags in flight at once, posted in opposite orders on the two sides: matching is by tag.
    std::vector<int32_t> out_a(1001, comm.rank()), out_b(5, comm.rank() * 2), in_a(1001), in_b(5);
    auto rb = comm.recvAsync(in_b.data(), in_b.size() * 4, left, 8);
    auto ra = comm.recvAsync(in_a.data(), in_a.size() * 4, left, 7);
    auto sa = comm.sendAsync(out_a.data(), out_a.size() * 4, right, 7);
    auto sb = comm.sendAsync(out_b.data(), out_b.size() * 4, right, 8);
    for (auto& w : {ra, rb, sa, sb}) w->wait(comm.timeout());
    EXPECT_EQ(in_a, std::vector<int32_t>(1001, left));
    EXPECT_EQ(in_b, std::vector<int32_t>(5, left * 2));
    // The reserved tag space works the same (the ring allreduce uses it).
    int64_t token = comm.rank(), got = -1;
    auto r = comm.recvAsync(&got, sizeof got, left, kReservedTagBase + 3);
    comm.sendAsync(&token, sizeof token, right, kReservedTagBase + 3)->wait(comm.timeout());
    r->wait(comm.timeout());
    EXPECT_EQ(got, left);
    comm.barrier();
  }));
}

TEST_F(GlooComm, MismatchedCollectivesRaiseCommErrorNamingBoth) {
  auto results = runWithCommunicators(2, testCommOptions(5), [&](Communicator& comm) {
    std::vector<float> v(1024, 1.0f);
    comm.barrier();  // collective #0
    if (comm.rank() == 0) {
      comm.allreduce(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum);
    } else {
      comm.broadcast(Buffer{v.data(), 512, DataType::kFloat32}, 0);
    }
  });
  for (const auto& r : results) {
    EXPECT_EQ(r.error_type, "CommError") << r.error;
    EXPECT_NE(r.error.find("rank 1 called broadcast(float32, 512 elements, root 0) as collective #1 but rank 0 "
                           "called allreduce(float32, 1024 elements, sum)"),
              std::string::npos)
        << r.error;
  }
}

// allgatherBytes checks agreement inside its own exchange (the Gloo backend overlaps the two): meeting
// another collective still gives every rank the mismatch, not a hang, with a message of any length.
TEST_F(GlooComm, AllgatherBytesAgainstAnotherCollectiveIsAMismatch) {
  for (size_t length : {size_t{16}, size_t{300} << 10}) {
    auto results = runWithCommunicators(3, testCommOptions(5), [&](Communicator& comm) {
      std::vector<float> v(256, 1.0f);
      comm.barrier();  // collective #0
      if (comm.rank() == 1) {
        comm.allreduce(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum);
      } else {
        comm.allgatherBytes(std::vector<uint8_t>(length, 7));
      }
    });
    for (size_t r = 0; r < results.size(); ++r) {
      EXPECT_EQ(results[r].error_type, "CommError") << "rank " << r << ": " << results[r].error;
      EXPECT_NE(results[r].error.find("rank 1 called allreduce(float32, 256 elements, sum) as collective #1 but "
                                      "rank 0 called allgatherBytes"),
                std::string::npos)
          << "rank " << r << ": " << results[r].error;
    }
  }
}

TEST_F(GlooComm, MismatchedCountOrDtypeIsCaught) {
  auto results = runWithCommunicators(3, testCommOptions(5), [&](Communicator& comm) {
    std::vector<double> v(100, 1.0);
    const size_t count = comm.rank() == 2 ? 99 : 100;
    comm.allreduce(Buffer{v.data(), count, DataType::kFloat64}, ReduceOp::kSum);
  });
  for (const auto& r : results) {
    EXPECT_EQ(r.error_type, "CommError");
    EXPECT_NE(r.error.find("rank 2 called allreduce(float64, 99 elements, sum) as collective #0"), std::string::npos)
        << r.error;
  }
}

TEST_F(GlooComm, RankThatNeverCallsTheCollectiveIsNamedInTheTimeout) {
  Countdown finished(2);
  auto results = runWithCommunicators(3, testCommOptions(1.5), [&](Communicator& comm) {
    std::vector<float> v(4096, 1.0f);
    comm.allreduce(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum);  // #0, everyone
    if (comm.rank() != 2) {
      try {
        comm.allreduce(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum);  // #1, rank 2 absent
      } catch (...) {
        finished.arrive();
        throw;
      }
    } else {
      // Stay connected (no collective) until the others have given up.
      EXPECT_TRUE(finished.waitFor(std::chrono::seconds(30)));
    }
  });
  ASSERT_TRUE(results[2].ok()) << results[2].error;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].error_type, "TimeoutError") << results[r].error;
    EXPECT_NE(results[r].error.find("allreduce(float32, 4096 elements, sum) (collective #1)"), std::string::npos)
        << results[r].error;
    EXPECT_NE(results[r].error.find("rank 2 did not arrive (rank 2 last seen at collective #0)"), std::string::npos)
        << results[r].error;
  }
}

TEST_F(GlooComm, BrokenCommunicatorFailsLaterCallsWithTheFirstError) {
  Countdown finished(1);
  auto results = runWithCommunicators(2, testCommOptions(1.0), [&](Communicator& comm) {
    if (comm.rank() == 1) {
      EXPECT_TRUE(finished.waitFor(std::chrono::seconds(30)));
      return;
    }
    int64_t x = 1;
    EXPECT_THROW(comm.allreduce(Buffer{&x, 1, DataType::kInt64}, ReduceOp::kSum), TimeoutError);
    finished.arrive();
    try {
      comm.barrier();
      ADD_FAILURE() << "barrier on a broken communicator succeeded";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("broken communicator"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank 1 never reached a collective"), std::string::npos) << e.what();
    }
  });
  expectAllOk(results);
}

// A byte exchange that fails keeps its exchange (what it reads and writes) for good: MPI cannot cancel a
// timed-out send or receive, and on the same-host path a peer may still be copying what this rank offered;
// either would otherwise touch the caller's freed bytes. Rank 1 stays connected but never joins; each
// exchange gets a fresh job (the first failure breaks a communicator).
void expectFailedByteExchangesKeepTheirBuffers(bool same_host) {
  SCOPED_TRACE(same_host ? "same-host copies" : "gloo");
  auto options = testCommOptions(1.0);
  options.check_collectives = false;  // the exchange itself must be what times out
  options.same_host_copy = same_host;
  const auto rankZeroAlone = [&](const std::function<void(Communicator&)>& exchange) {
    Countdown finished(1);
    expectAllOk(runWithCommunicators(2, options, [&](Communicator& comm) {
      if (comm.rank() == 1) {
        EXPECT_TRUE(finished.waitFor(std::chrono::seconds(30)));
        return;
      }
      EXPECT_EQ(comm.canReadPeerMemory(), same_host);
      exchange(comm);
      finished.arrive();
    }));
  };
  std::weak_ptr<ByteExchange> gathered;
  rankZeroAlone([&](Communicator& comm) {
    auto exchange = std::make_shared<ByteExchange>();
    exchange->mine.assign(1 << 20, 7);
    gathered = exchange;
    EXPECT_THROW(comm.allgatherBytesInto(exchange), TimeoutError);
  });
  EXPECT_FALSE(gathered.expired()) << "a failed allgatherBytes let go of the bytes it sends";
  std::weak_ptr<AllToAllExchange> personal;
  rankZeroAlone([&](Communicator& comm) {
    auto exchange = std::make_shared<AllToAllExchange>();
    exchange->send.assign(2, std::vector<uint8_t>(1 << 20, 7));
    personal = exchange;
    EXPECT_THROW(comm.allToAllBytesInto(exchange), TimeoutError);
  });
  EXPECT_FALSE(personal.expired()) << "a failed allToAllBytes let go of the bytes it sends";
}

TEST_F(GlooComm, AFailedByteExchangeKeepsItsBuffers) { expectFailedByteExchangesKeepTheirBuffers(false); }
TEST_F(GlooComm, AFailedSameHostByteExchangeKeepsItsBuffers) { expectFailedByteExchangesKeepTheirBuffers(true); }

// A caller's shorter wait gave up on a peer that never came; destroying the communicator then must not wait
// out comm.timeout_s for the collective still running on its thread: a wait on a same-host notice gives up.
TEST_F(GlooComm, DestroyingACommunicatorDoesNotWaitOutItsTimeoutForAMissingPeer) {
  dist::MemoryStore store;
  Countdown destroyed(1);
  double destroy_seconds = -1;
  bool same_host = false;
  auto results = testing::runRankThreads(2, [&](int rank) {
    dist::ProcessInfo process;
    process.rank = rank;
    process.world_size = 2;
    std::unique_ptr<Communicator> comm = makeCommunicator(testCommOptions(60.0), process, store);
    if (rank == 1) {  // connected, never joins the collective
      EXPECT_TRUE(destroyed.waitFor(std::chrono::seconds(30)));
      return;
    }
    same_host = comm->canReadPeerMemory();
    std::vector<float> v(1024, 1.0f);
    WorkPtr work = comm->allreduceAsync(Buffer{v.data(), v.size(), DataType::kFloat32}, ReduceOp::kSum);
    EXPECT_THROW(work->wait(std::chrono::milliseconds(500)), TimeoutError);
    const auto start = std::chrono::steady_clock::now();
    comm.reset();
    destroy_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    destroyed.arrive();
  });
  expectAllOk(results);
  ASSERT_TRUE(same_host) << "this test needs the same-host path";
  EXPECT_GE(destroy_seconds, 0.0);
  EXPECT_LT(destroy_seconds, 5.0) << "the communicator waited for its stuck collective";
}

TEST_F(GlooComm, RankThatNeverJoinsIsNamed) {
  dist::MemoryStore store;
  auto results = testing::runRankThreads(3, [&](int rank) {
    if (rank == 1) return;  // never creates its communicator
    dist::ProcessInfo process;
    process.rank = rank;
    process.world_size = 3;
    makeCommunicator(testCommOptions(1.0), process, store);
  });
  EXPECT_TRUE(results[1].ok());
  for (int r : {0, 2}) {
    EXPECT_EQ(results[r].error_type, "TimeoutError");
    EXPECT_NE(results[r].error.find("gloo rendezvous: rank 1 did not join within 1 s"), std::string::npos)
        << results[r].error;
  }
}

TEST_F(GlooComm, ChecksCanBeSwitchedOff) {
  auto options = testCommOptions();
  options.check_collectives = false;
  expectAllOk(runWithCommunicators(2, options, [&](Communicator& comm) {
    float x = static_cast<float>(comm.rank() + 1);
    comm.allreduce(Buffer{&x, 1, DataType::kFloat32}, ReduceOp::kSum);
    EXPECT_EQ(x, 3.0f);
  }));
}

TEST_F(GlooComm, SeveralCommunicatorsOnOneStore) {
  dist::MemoryStore store;
  for (int round = 0; round < 3; ++round) {
    expectAllOk(runWithCommunicators(
        2, testCommOptions(),
        [&](Communicator& comm) {
          int64_t x = round;
          comm.allreduce(Buffer{&x, 1, DataType::kInt64}, ReduceOp::kSum);
          EXPECT_EQ(x, 2 * round);
        },
        &store));
  }
}

TEST_F(GlooComm, FactoryRejectsBackendsNotBuiltOrNotFitting) {
  config::CommOptions options;
  options.backend = "auto";
  EXPECT_EQ(resolveBackend(options, Device{}), "gloo");
  options.backend = "nccl";
  EXPECT_THROW(resolveBackend(options, Device{}), ConfigError);
  options.backend = "gloo";
  options.allreduce_algorithm = "bogus";
  dist::MemoryStore store;
  EXPECT_THROW(makeCommunicator(options, dist::ProcessInfo{}, store), ConfigError);
}

}  // namespace
}  // namespace ringtrain::comm
