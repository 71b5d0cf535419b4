// comm_latency: small-message allreduce latency of the Gloo paths, one row per size, run under ringrun:
//   ringrun --nproc-per-node 2 --standalone -- build/bin/comm_latency [ITERATIONS]
// Columns (median microseconds per call, slowest rank): ringtrain's Gloo communicator with the collective
// check on and off, gloo::allreduce (unbound buffers), and Gloo's legacy AllreduceRing and
// AllreduceRingChunked (bound buffers) on a context of their own, the latter also built anew per call. It exists to explain FACTS.md's
// "ring_chunked takes 50-90 ms at 16 KiB".
#include <gloo/allreduce.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/dist/connect_store.h"
#include "ringtrain/dist/process_info.h"

using namespace ringtrain;

namespace {

class StoreAdapter final : public gloo::rendezvous::Store {
 public:
  explicit StoreAdapter(dist::Store& s) : s_(s) {}
  void set(const std::string& k, const std::vector<char>& v) override { s_.set(k, dist::Bytes(v.begin(), v.end())); }
  std::vector<char> get(const std::string& k) override {
    auto v = s_.get(k, std::chrono::seconds(60));
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& k) override { s_.wait(k, std::chrono::seconds(60)); }
  void wait(const std::vector<std::string>& k, const std::chrono::milliseconds& t) override { s_.wait(k, t); }

 private:
  dist::Store& s_;
};

// Median over `iters` calls of the slowest rank's time, in microseconds.
double medianUs(comm::Communicator& c, int iters, const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    c.barrier();
    const auto start = std::chrono::steady_clock::now();
    fn();
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    c.allreduce(comm::Buffer{&us, 1, comm::DataType::kFloat64}, comm::ReduceOp::kMax);
    t.push_back(us);
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // as the ringtrain executable does: see the header
  try {
    const int iters = argc > 1 ? std::atoi(argv[1]) : 30;
    config::CommOptions options;
    options.backend = "gloo";
    options.allreduce_algorithm = "native";
    const auto info = dist::detectProcessInfo(dist::processEnvironment(), options);
    auto store = dist::connectStore(info, std::chrono::seconds(30));
    auto checked = comm::makeCommunicator(options, info, *store);
    options.check_collectives = false;
    auto unchecked = comm::makeCommunicator(options, info, *store);

    dist::PrefixStore raw_store("bench_raw", *store);
    StoreAdapter adapter(raw_store);
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(info.rank, info.world_size);
    context->connectFullMesh(adapter, device);

    if (info.rank == 0) {
      std::printf("%10s %12s %12s %12s %12s %14s %14s   (median us, %d ranks)\n", "bytes", "ours+check", "ours",
                  "gloo::allred", "gloo Ring", "gloo RingChunk", "+construction", info.world_size);
    }
    for (size_t bytes : {size_t{4}, size_t{4096}, size_t{16384}, size_t{65536}, size_t{262144}, size_t{1048576}}) {
      const size_t count = bytes / 4;
      std::vector<float> data(count, 1.0f);
      comm::Buffer buf{data.data(), count, comm::DataType::kFloat32};
      const double a = medianUs(*checked, iters, [&] { checked->allreduce(buf, comm::ReduceOp::kSum); });
      const double b = medianUs(*checked, iters, [&] { unchecked->allreduce(buf, comm::ReduceOp::kSum); });
      const double c = medianUs(*checked, iters, [&] {
        gloo::AllreduceOptions opts(context);
        opts.setOutput(data.data(), count);
        opts.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
        gloo::allreduce(opts);
      });
      gloo::AllreduceRing<float> ring(context, {data.data()}, static_cast<int>(count));
      const double d = medianUs(*checked, iters, [&] { ring.run(); });
      gloo::AllreduceRingChunked<float> chunked(context, {data.data()}, static_cast<int>(count));
      const double e = medianUs(*checked, iters, [&] { chunked.run(); });
      // What a caller that builds the algorithm per call (as a process group would) pays: the bound-buffer
      // algorithms register buffers with each peer in their constructor.
      const double f = medianUs(*checked, iters, [&] {
        gloo::AllreduceRingChunked<float>(context, {data.data()}, static_cast<int>(count)).run();
      });
      if (info.rank == 0) {
        std::printf("%10zu %12.1f %12.1f %12.1f %12.1f %14.1f %14.1f\n", bytes, a, b, c, d, e, f);
      }
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "comm_latency: %s\n", e.what());
    return e.exitCode();
  }
}
