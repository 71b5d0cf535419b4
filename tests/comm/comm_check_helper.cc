// comm_check_helper: one rank of a multiprocess communicator check, started by mpirun or ringrun (the
// *_mptest.cc tests drive it). Usage: comm_check_helper BACKEND SCENARIO [TIMEOUT_S]
//   collectives  every collective, dtypes and ops, odd sizes, checked against closed forms
//   stop         after one collective the last rank stops itself (SIGSTOP); the others must get a
//                TimeoutError naming it
//   mismatch     rank 1 calls broadcast where the others call allreduce
//   fail         after one collective rank 0 throws (and exits as the trainer does, through main's return);
//                the others wait in a collective: the job must end soon after, not at their timeout
//   fail-recorded after one collective rank 1 fails, records it (core/failure_report.h) as the trainer
//                does, and hangs in its cleanup: rank 0's collective times out naming rank 1's failure
//   compare      (under mpirun) the same pseudo-random data through MPI, Gloo, and the ring over each;
//                integer-valued, so every path must agree bit for bit
// Prints "comm_check: rank R ok" or the error, and exits with the error's exit code.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <thread>

#include "comm/arrival_board.h"
#include "ringtrain/comm/communicator.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/comm/reduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/failure_report.h"
#include "ringtrain/dist/connect_store.h"
#include "ringtrain/dist/process_info.h"

using namespace ringtrain;
using namespace ringtrain::comm;

namespace {

double contribution(int rank, size_t i) { return rank + 1 + static_cast<double>(i % 5); }

template <typename T>
void checkAllreduce(Communicator& comm, DataType dtype, size_t count) {
  const int n = comm.size();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin}) {
    std::vector<T> v(count);
    for (size_t i = 0; i < count; ++i) v[i] = static_cast<T>(contribution(comm.rank(), i));
    comm.allreduce(Buffer{v.data(), count, dtype}, op);
    for (size_t i = 0; i < count; ++i) {
      const double k = static_cast<double>(i % 5);
      double want = 0;
      switch (op) {
        case ReduceOp::kSum: want = n * (n + 1) / 2.0 + n * k; break;
        case ReduceOp::kAverage: want = static_cast<double>(static_cast<T>((n * (n + 1) / 2.0 + n * k) / n)); break;
        case ReduceOp::kMax: want = n + k; break;
        case ReduceOp::kMin: want = 1 + k; break;
      }
      RT_CHECK(static_cast<double>(v[i]) == want, toString(dtype), " ", toString(op), " count ", count, " element ", i,
               ": got ", static_cast<double>(v[i]), " want ", want);
    }
  }
}

void check16(Communicator& comm, DataType dtype, size_t count) {
  auto to = dtype == DataType::kFloat16 ? floatToHalf : floatToBFloat16;
  auto from = dtype == DataType::kFloat16 ? halfToFloat : bfloat16ToFloat;
  std::vector<uint16_t> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = to(static_cast<float>(contribution(comm.rank(), i)));
  comm.allreduce(Buffer{v.data(), count, dtype}, ReduceOp::kSum);
  const int n = comm.size();
  for (size_t i = 0; i < count; ++i) {
    RT_CHECK(from(v[i]) == static_cast<float>(n * (n + 1) / 2.0 + n * static_cast<double>(i % 5)), toString(dtype),
             " sum element ", i);
  }
}

void collectives(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}}) {
    checkAllreduce<float>(comm, DataType::kFloat32, count);
    checkAllreduce<double>(comm, DataType::kFloat64, count);
    checkAllreduce<int64_t>(comm, DataType::kInt64, count);
    check16(comm, DataType::kFloat16, count);
    check16(comm, DataType::kBFloat16, count);
  }
  checkAllreduce<float>(comm, DataType::kFloat32, 1000003);
  for (int root = 0; root < n; ++root) {
    std::vector<int64_t> v(100003, me);
    comm.broadcast(Buffer{v.data(), v.size(), DataType::kInt64}, root);
    RT_CHECK(v.front() == root && v.back() == root, "broadcast from ", root);
  }
  std::vector<float> send(7, static_cast<float>(me)), recv(7 * n);
  comm.allgather(Buffer{send.data(), 7, DataType::kFloat32}, Buffer{recv.data(), recv.size(), DataType::kFloat32});
  for (int r = 0; r < n; ++r) RT_CHECK(recv[r * 7] == r && recv[r * 7 + 6] == r, "allgather slot ", r);
  std::vector<uint8_t> mine(me * 3);
  std::iota(mine.begin(), mine.end(), static_cast<uint8_t>(me));
  const auto all = comm.allgatherBytes(mine);
  for (int r = 0; r < n; ++r) RT_CHECK(all[r].size() == static_cast<size_t>(r * 3), "allgatherBytes size from ", r);
  std::vector<std::vector<uint8_t>> personal(n);
  for (int r = 0; r < n; ++r) personal[r].assign(r + me + 1, static_cast<uint8_t>(me * 16 + r));
  const auto got = comm.allToAllBytes(personal);
  for (int r = 0; r < n; ++r) {
    RT_CHECK(got[r] == std::vector<uint8_t>(r + me + 1, static_cast<uint8_t>(r * 16 + me)), "allToAllBytes from ", r);
  }
  if (n > 1) {
    int64_t out = me, in = -1;
    auto rw = comm.recvAsync(&in, sizeof in, (me + n - 1) % n, 5);
    comm.sendAsync(&out, sizeof out, (me + 1) % n, 5)->wait(comm.timeout());
    rw->wait(comm.timeout());
    RT_CHECK(in == (me + n - 1) % n, "p2p ring got ", in);
  }
  comm.barrier();
}

// Every (backend, algorithm) pair reduces the same integer-valued data; results must be identical.
void compare(const config::CommOptions& base, const dist::ProcessInfo& info, dist::Store& store) {
  std::vector<std::unique_ptr<Communicator>> comms;
  std::vector<std::string> names;
  for (const char* backend : {"mpi", "gloo"}) {
    for (const char* algorithm : {"native", "ring"}) {
      config::CommOptions options = base;
      options.backend = backend;
      options.allreduce_algorithm = algorithm;
      comms.push_back(makeCommunicator(options, info, store));
      names.push_back(std::string(backend) + "/" + algorithm);
    }
  }
  uint64_t state = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(info.rank + 1);
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (size_t count : {size_t{1}, size_t{3}, size_t{4097}, size_t{300001}}) {
    std::vector<float> f(count);
    std::vector<int64_t> l(count);
    for (size_t i = 0; i < count; ++i) {
      f[i] = static_cast<float>(static_cast<int>(next() % 2001) - 1000);
      l[i] = static_cast<int64_t>(next() % 1000001) - 500000;
    }
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
      std::vector<std::vector<float>> rf;
      std::vector<std::vector<int64_t>> rl;
      for (auto& c : comms) {
        rf.push_back(f);
        rl.push_back(l);
        c->allreduce(Buffer{rf.back().data(), count, DataType::kFloat32}, op);
        c->allreduce(Buffer{rl.back().data(), count, DataType::kInt64}, op);
      }
      for (size_t k = 1; k < comms.size(); ++k) {
        RT_CHECK(rf[k] == rf[0], names[k], " and ", names[0], " disagree on float32 ", toString(op), " of ", count);
        RT_CHECK(rl[k] == rl[0], names[k], " and ", names[0], " disagree on int64 ", toString(op), " of ", count);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s BACKEND collectives|stop|leave|fail|fail-recorded|mismatch|compare [TIMEOUT_S "
                 "[no-same-host-copy]]\n", argv[0]);
    return 2;
  }
  const std::string scenario = argv[2];
  int rank = -1;
  try {
    config::CommOptions options;
    options.backend = argv[1];
    options.timeout_s = argc > 3 ? std::stod(argv[3]) : 30.0;
    if (argc > 4 && std::string(argv[4]) == "no-same-host-copy") options.same_host_copy = false;
    const dist::ProcessInfo info = dist::detectProcessInfo(dist::processEnvironment(), options);
    rank = info.rank;
    auto store = dist::connectStore(info, std::chrono::seconds(30));
    if (scenario == "compare") {
      compare(options, info, *store);
      std::printf("comm_check: rank %d ok\n", rank);
      std::fflush(stdout);
      return 0;
    }
    auto comm = makeCommunicator(options, info, *store);
    if (scenario == "collectives") {
      collectives(*comm);
    } else if (scenario == "stop") {
      comm->barrier();
      if (comm->rank() == comm->size() - 1) {
        // Arrivals are published off the critical path, at most every ArrivalBoard::kPublishInterval: wait
        // a few of those, so that the others can say which collective this rank last reached. (On one host
        // the barrier returns within microseconds; stopped at once, this rank would read as having never
        // reached a collective.)
        std::this_thread::sleep_for(4 * comm::ArrivalBoard::kPublishInterval);
        std::fprintf(stderr, "comm_check: rank %d stopping itself\n", comm->rank());
        raise(SIGSTOP);
      }
      float x = 1;
      comm->allreduce(Buffer{&x, 1, DataType::kFloat32}, ReduceOp::kSum);
    } else if (scenario == "leave") {
      comm->barrier();
      if (comm->rank() == comm->size() - 1) {
        std::fprintf(stderr, "comm_check: rank %d leaving without a word\n", comm->rank());
        std::fflush(stderr);
        std::_Exit(0);
      }
      float x = 1;
      comm->allreduce(Buffer{&x, 1, DataType::kFloat32}, ReduceOp::kSum);
    } else if (scenario == "fail") {
      comm->barrier();
      if (comm->rank() == 0) RT_THROW(DataError, "rank 0 fails on purpose");
      float x = 1;
      comm->allreduce(Buffer{&x, 1, DataType::kFloat32}, ReduceOp::kSum);
    } else if (scenario == "fail-recorded") {
      comm->barrier();
      if (comm->rank() == 1) {
        try {
          RT_THROW(DataError, "rank 1 fails on purpose");
        } catch (const Error& e) {
          recordFailure(e.exitCode(), e.what());  // while the communicator still lives
          // Then stuck in its cleanup (a flush to a hung file system) past the others' timeout.
          std::this_thread::sleep_for(std::chrono::duration<double>(options.timeout_s + 5));
          throw;
        }
      }
      float x = 1;
      comm->allreduce(Buffer{&x, 1, DataType::kFloat32}, ReduceOp::kSum);
    } else if (scenario == "mismatch") {
      float x[4] = {};
      if (comm->rank() == 1) {
        comm->broadcast(Buffer{x, 4, DataType::kFloat32}, 0);
      } else {
        comm->allreduce(Buffer{x, 4, DataType::kFloat32}, ReduceOp::kSum);
      }
    } else {
      std::fprintf(stderr, "unknown scenario %s\n", scenario.c_str());
      return 2;
    }
    std::printf("comm_check: rank %d ok\n", rank);
    std::fflush(stdout);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "comm_check: rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    if (scenario == "fail") return e.exitCode();  // through exit's handlers, MPI's among them
    std::_Exit(e.exitCode());  // a hung backend must not block the exit
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm_check: rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    std::_Exit(1);
  }
}
