// An in-process Communicator for ranks that are threads, used by the ddp tests until (and beside) the
// real backends: each rank has a worker thread that runs its collectives in issue order (so *Async really
// overlaps the caller), and ranks meet on a shared table keyed by sequence number. Reductions sum the
// ranks' contributions in rank order, so every rank gets bitwise the same result. Waits time out.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/core/error.h"

namespace ringtrain::testing {

using Bytes = std::vector<uint8_t>;

class ThreadGroup {
 public:
  explicit ThreadGroup(int world) : world_(world) {}
  int world() const { return world_; }

  // Every rank contributes send[r] for each destination r; returns what each rank sent to `rank`... in
  // full: result[src] = src's whole contribution list.
  std::vector<std::vector<Bytes>> exchange(uint64_t seq, int rank, std::vector<Bytes> mine,
                                           std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    Slot& slot = slots_[seq];
    if (slot.contributions.empty()) slot.contributions.resize(world_);
    slot.contributions[rank] = std::move(mine);
    ++slot.arrived;
    cv_.notify_all();
    if (!cv_.wait_for(lock, timeout, [&] { return slots_[seq].arrived == world_; })) {
      RT_THROW(TimeoutError, "thread group: collective ", seq, " timed out on rank ", rank);
    }
    Slot& done = slots_[seq];
    auto result = done.contributions;
    if (++done.departed == world_) slots_.erase(seq);
    return result;
  }

 private:
  struct Slot {
    std::vector<std::vector<Bytes>> contributions;
    int arrived = 0;
    int departed = 0;
  };
  const int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Slot> slots_;  // guarded by mu_
};

class ThreadWork : public comm::Work {
 public:
  void wait(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return done_; })) RT_THROW(TimeoutError, "thread work timed out");
    if (error_) std::rethrow_exception(error_);
  }
  bool isCompleted() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  std::chrono::nanoseconds duration() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return duration_;
  }
  void finish(std::exception_ptr error, std::chrono::nanoseconds duration) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = error;
    duration_ = duration;
    done_ = true;
    cv_.notify_all();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  std::chrono::nanoseconds duration_{0};
};

class ThreadCommunicator : public comm::Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank, std::chrono::milliseconds timeout = std::chrono::seconds(60))
      : group_(group), rank_(rank), timeout_(timeout), worker_([this] { loop(); }) {}
  ~ThreadCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  int rank() const override { return rank_; }
  int size() const override { return group_.world(); }
  std::string backendName() const override { return "threads"; }
  std::chrono::milliseconds timeout() const override { return timeout_; }
  uint64_t nextSequence() const { return seq_; }

  comm::WorkPtr allreduceAsync(comm::Buffer buffer, comm::ReduceOp op) override {
    return enqueue([this, buffer, op](uint64_t seq) {
      Bytes mine(static_cast<uint8_t*>(buffer.data), static_cast<uint8_t*>(buffer.data) + buffer.bytes());
      auto all = group_.exchange(seq, rank_, {mine}, timeout_);
      switch (buffer.dtype) {
        case comm::DataType::kFloat32: reduce<float>(all, buffer, op); break;
        case comm::DataType::kFloat64: reduce<double>(all, buffer, op); break;
        case comm::DataType::kFloat16: reduce<c10::Half>(all, buffer, op); break;
        case comm::DataType::kBFloat16: reduce<c10::BFloat16>(all, buffer, op); break;
        case comm::DataType::kInt64: reduce<int64_t>(all, buffer, op); break;
        default: RT_THROW(Error, "thread communicator: unsupported dtype");
      }
    });
  }
  comm::WorkPtr broadcastAsync(comm::Buffer buffer, int root) override {
    return enqueue([this, buffer, root](uint64_t seq) {
      Bytes mine(static_cast<uint8_t*>(buffer.data), static_cast<uint8_t*>(buffer.data) + buffer.bytes());
      auto all = group_.exchange(seq, rank_, {mine}, timeout_);
      RT_CHECK_EQ(all[root][0].size(), buffer.bytes(), "broadcast sizes differ");
      std::memcpy(buffer.data, all[root][0].data(), buffer.bytes());
    });
  }
  comm::WorkPtr allgatherAsync(comm::Buffer send, comm::Buffer recv) override {
    return enqueue([this, send, recv](uint64_t seq) {
      Bytes mine(static_cast<uint8_t*>(send.data), static_cast<uint8_t*>(send.data) + send.bytes());
      auto all = group_.exchange(seq, rank_, {mine}, timeout_);
      for (int r = 0; r < size(); ++r) {
        std::memcpy(static_cast<uint8_t*>(recv.data) + r * send.bytes(), all[r][0].data(), send.bytes());
      }
    });
  }
  std::vector<Bytes> allgatherBytes(const Bytes& mine) override {
    std::vector<Bytes> out;
    enqueue([&](uint64_t seq) {
      auto all = group_.exchange(seq, rank_, {mine}, timeout_);
      for (auto& c : all) out.push_back(c[0]);
    })->wait(timeout_);
    bytes_sent_ += mine.size() * (size() - 1);
    return out;
  }
  std::vector<Bytes> allToAllBytes(const std::vector<Bytes>& send) override {
    std::vector<Bytes> out;
    enqueue([&](uint64_t seq) {
      auto all = group_.exchange(seq, rank_, send, timeout_);
      for (auto& c : all) out.push_back(c[rank_]);
    })->wait(timeout_);
    return out;
  }
  void barrier() override {
    enqueue([&](uint64_t seq) { group_.exchange(seq, rank_, {}, timeout_); })->wait(timeout_);
  }
  comm::WorkPtr sendAsync(const void*, size_t, int, uint32_t) override {
    RT_THROW(Error, "thread communicator: no point-to-point");
  }
  comm::WorkPtr recvAsync(void*, size_t, int, uint32_t) override {
    RT_THROW(Error, "thread communicator: no point-to-point");
  }

  // Number of collectives issued so far.
  uint64_t issued() const { return seq_; }
  size_t bytes_sent_ = 0;

 private:
  template <typename T>
  static void reduce(const std::vector<std::vector<Bytes>>& all, comm::Buffer buffer, comm::ReduceOp op) {
    T* out = static_cast<T*>(buffer.data);
    for (size_t i = 0; i < buffer.count; ++i) {
      float acc = 0;
      double dacc = 0;
      for (size_t r = 0; r < all.size(); ++r) {
        T v;
        std::memcpy(&v, all[r][0].data() + i * sizeof(T), sizeof(T));
        if constexpr (std::is_same_v<T, double> || std::is_same_v<T, int64_t>) {
          dacc += static_cast<double>(v);
        } else {
          acc += static_cast<float>(v);
        }
      }
      double total = (std::is_same_v<T, double> || std::is_same_v<T, int64_t>) ? dacc : acc;
      if (op == comm::ReduceOp::kAverage) total /= static_cast<double>(all.size());
      out[i] = static_cast<T>(total);
    }
  }

  comm::WorkPtr enqueue(std::function<void(uint64_t)> fn) {
    auto work = std::make_shared<ThreadWork>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({seq_++, std::move(fn), work});
    }
    cv_.notify_all();
    return work;
  }

  void loop() {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      const auto start = std::chrono::steady_clock::now();
      std::exception_ptr error;
      try {
        task.fn(task.seq);
      } catch (...) {
        error = std::current_exception();
      }
      task.work->finish(error, std::chrono::steady_clock::now() - start);
    }
  }

  struct Task {
    uint64_t seq = 0;
    std::function<void(uint64_t)> fn;
    std::shared_ptr<ThreadWork> work;
  };
  ThreadGroup& group_;
  const int rank_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;  // guarded by mu_
  uint64_t seq_ = 0;        // issuing thread only
  bool stop_ = false;       // guarded by mu_
  std::thread worker_;
};

// Runs fn(rank) on `world` threads; rethrows the first exception (after all threads joined).
inline void runRanks(int world, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(world);
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace ringtrain::testing
