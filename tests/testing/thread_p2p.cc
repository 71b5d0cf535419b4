#include "testing/thread_p2p.h"

#include <cstdint>
#include <cstring>
#include <exception>
#include <thread>

#include "ringtrain/core/error.h"

namespace ringtrain::testing {

namespace {

class DoneWork : public comm::Work {
 public:
  void wait(std::chrono::milliseconds) override {}
  bool isCompleted() const override { return true; }
  std::chrono::nanoseconds duration() const override { return {}; }
};

}  // namespace

class RecvWork : public comm::Work {
 public:
  RecvWork(ThreadWorld& world, std::shared_ptr<ThreadWorld::RecvState> state, int src, uint32_t tag)
      : world_(world), state_(std::move(state)), src_(src), tag_(tag) {}

  void wait(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(world_.mu_);
    if (!world_.arrived_.wait_for(lock, timeout, [&] { return state_->done; })) {
      RT_THROW(TimeoutError, "ThreadP2P: receive of ", state_->bytes, " bytes from rank ", src_, " tag ", tag_,
               " did not arrive within ", timeout.count(), " ms");
    }
    if (!state_->error.empty()) RT_THROW(CommError, state_->error);
  }
  bool isCompleted() const override {
    std::lock_guard<std::mutex> lock(world_.mu_);
    return state_->done;
  }
  std::chrono::nanoseconds duration() const override { return {}; }

 private:
  ThreadWorld& world_;
  std::shared_ptr<ThreadWorld::RecvState> state_;
  int src_;
  uint32_t tag_;
};

class SendWork : public comm::Work {
 public:
  SendWork(ThreadWorld& world, std::shared_ptr<ThreadWorld::SendState> state, int dst, uint32_t tag)
      : world_(world), state_(std::move(state)), dst_(dst), tag_(tag) {}

  void wait(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(world_.mu_);
    if (!world_.arrived_.wait_for(lock, timeout, [&] { return state_->done; })) {
      RT_THROW(TimeoutError, "ThreadP2P: send of ", state_->bytes, " bytes to rank ", dst_, " tag ", tag_,
               " was not received within ", timeout.count(), " ms");
    }
  }
  bool isCompleted() const override {
    std::lock_guard<std::mutex> lock(world_.mu_);
    return state_->done;
  }
  std::chrono::nanoseconds duration() const override { return {}; }

 private:
  ThreadWorld& world_;
  std::shared_ptr<ThreadWorld::SendState> state_;
  int dst_;
  uint32_t tag_;
};

ThreadWorld::ThreadWorld(int size, std::chrono::milliseconds timeout, bool rendezvous)
    : size_(size), timeout_(timeout), rendezvous_(rendezvous) {}

void ThreadWorld::run(const std::function<void(ThreadP2P&)>& body) {
  std::vector<std::exception_ptr> errors(size_);
  std::vector<std::thread> threads;
  for (int r = 0; r < size_; ++r) {
    threads.emplace_back([this, r, &body, &errors] {
      try {
        ThreadP2P comm(*this, r);
        body(comm);
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

void ThreadWorld::deliver(SendState& send, RecvState& recv, int src, int dst, uint32_t tag) {
  if (recv.bytes == send.bytes) {
    std::memcpy(recv.data, send.data, send.bytes);
  } else {
    recv.error = ringtrain::detail::concat("ThreadP2P: rank ", dst, " expected ", recv.bytes, " bytes from rank ", src,
                                " tag ", tag, " but ", send.bytes, " were sent");
  }
  recv.done = true;
  send.done = true;
  arrived_.notify_all();
}

std::shared_ptr<ThreadWorld::SendState> ThreadWorld::send(const void* data, size_t bytes, int src, int dst,
                                                          uint32_t tag) {
  auto state = std::make_shared<SendState>(SendState{data, bytes});
  std::lock_guard<std::mutex> lock(mu_);
  Mailbox& box = mailboxes_[Key{src, dst, tag}];
  if (!box.pending.empty()) {
    std::shared_ptr<RecvState> recv = std::move(box.pending.front());
    box.pending.pop_front();
    deliver(*state, *recv, src, dst, tag);
    return state;
  }
  if (!rendezvous_) {
    const auto* p = static_cast<const uint8_t*>(data);
    state->copy.assign(p, p + bytes);
    state->data = state->copy.data();
    state->done = true;
  }
  box.unexpected.push_back(state);
  return state;
}

std::shared_ptr<ThreadWorld::RecvState> ThreadWorld::postRecv(void* data, size_t bytes, int src, int dst,
                                                               uint32_t tag) {
  auto state = std::make_shared<RecvState>(RecvState{data, bytes});
  std::lock_guard<std::mutex> lock(mu_);
  Mailbox& box = mailboxes_[Key{src, dst, tag}];
  if (box.unexpected.empty()) {
    box.pending.push_back(state);
    return state;
  }
  std::shared_ptr<SendState> message = std::move(box.unexpected.front());
  box.unexpected.pop_front();
  deliver(*message, *state, src, dst, tag);
  return state;
}

int ThreadP2P::size() const { return world_.size(); }
std::chrono::milliseconds ThreadP2P::timeout() const { return world_.timeout(); }

comm::WorkPtr ThreadP2P::allreduceAsync(comm::Buffer buffer, comm::ReduceOp op) {
  ++sequence_;
  comm::ringAllreduce(*this, buffer, op, ring_options);
  return std::make_shared<DoneWork>();
}

comm::WorkPtr ThreadP2P::broadcastAsync(comm::Buffer, int) {
  RT_THROW(Error, "ThreadP2P test double has no broadcast");
}
comm::WorkPtr ThreadP2P::allgatherAsync(comm::Buffer, comm::Buffer) {
  RT_THROW(Error, "ThreadP2P test double has no allgather");
}
std::vector<std::vector<uint8_t>> ThreadP2P::allgatherBytes(const std::vector<uint8_t>&) {
  RT_THROW(Error, "ThreadP2P test double has no allgatherBytes");
}
std::vector<std::vector<uint8_t>> ThreadP2P::allToAllBytes(const std::vector<std::vector<uint8_t>>&) {
  RT_THROW(Error, "ThreadP2P test double has no allToAllBytes");
}

void ThreadP2P::barrier() {
  int64_t one = 1;
  allreduce(comm::Buffer{&one, 1, comm::DataType::kInt64}, comm::ReduceOp::kSum);
}

bool ThreadP2P::canReadPeerMemory() const { return world_.peer_memory; }

void ThreadP2P::readPeerMemory(int peer, const void* remote, void* local, size_t bytes) {
  RT_CHECK_T(CommError, world_.peer_memory && peer >= 0 && peer < size() && peer != rank_,
             "thread-p2p: bad peer copy from rank ", peer);
  std::memcpy(local, remote, bytes);
  ++world_.peer_reads;
}

void ThreadP2P::postPeerNotice(int peer, comm::PeerNotice notice, std::chrono::milliseconds) {
  RT_CHECK_T(CommError, world_.peer_memory && peer >= 0 && peer < size() && peer != rank_,
             "thread-p2p: bad notice to rank ", peer);
  {
    std::lock_guard<std::mutex> lock(world_.mu_);
    world_.notices_[{rank_, peer}].push_back(notice);
  }
  world_.arrived_.notify_all();
}

comm::PeerNotice ThreadP2P::takePeerNotice(int peer, std::chrono::milliseconds timeout) {
  RT_CHECK_T(CommError, world_.peer_memory && peer >= 0 && peer < size() && peer != rank_,
             "thread-p2p: bad notice from rank ", peer);
  std::unique_lock<std::mutex> lock(world_.mu_);
  auto& queue = world_.notices_[{peer, rank_}];
  if (!world_.arrived_.wait_for(lock, timeout, [&] { return !queue.empty(); })) {
    RT_THROW(TimeoutError, "thread-p2p: no notice from rank ", peer, " within ", timeout.count(), " ms");
  }
  const comm::PeerNotice notice = queue.front();
  queue.pop_front();
  return notice;
}

comm::WorkPtr ThreadP2P::sendAsync(const void* data, size_t bytes, int peer, uint32_t tag) {
  RT_CHECK(peer >= 0 && peer < size(), "ThreadP2P: bad peer ", peer);
  return std::make_shared<SendWork>(world_, world_.send(data, bytes, rank_, peer, tag), peer, tag);
}

comm::WorkPtr ThreadP2P::recvAsync(void* data, size_t bytes, int peer, uint32_t tag) {
  RT_CHECK(peer >= 0 && peer < size(), "ThreadP2P: bad peer ", peer);
  return std::make_shared<RecvWork>(world_, world_.postRecv(data, bytes, peer, rank_, tag), peer, tag);
}

}  // namespace ringtrain::testing
