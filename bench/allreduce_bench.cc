// Allreduce benchmark in the conventions of the NCCL tests: for each size, float32 sum, warm-up, a
// barrier, then every iteration timed on its own; a rank's figure is the median of its iterations and the
// reported time is the slowest rank's (max over ranks). algbw = bytes / time, busbw = algbw * 2(n-1)/n.
// Each size runs ringtrain's ring (comm.allreduce_algorithm: ring) and the backend's own allreduce
// (native: gloo::allreduce, MPI_Allreduce, ncclAllReduce) side by side, each on its own communicator, and
// checks the data of both against the closed form afterwards. With --backend mpi a third column is a plain
// blocking MPI_Allreduce on MPI_COMM_WORLD from this thread (the native column is the communicator's, which
// drives MPI_Iallreduce from its communication thread), so the ring is also compared with MPI itself.
//
// Started once per rank, by ringrun or mpirun (directly, or through `ringtrain bench allreduce`, which
// execs this LibTorch-free program so no rank pays LibTorch's start-up):
//   mpirun -np 2 --bind-to none build/bin/allreduce_bench --backend mpi
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ringtrain/build_config.h"
#if RINGTRAIN_WITH_MPI
#include <mpi.h>
#endif
#if RINGTRAIN_HAVE_NCCL
#include "comm/cuda_memory.h"
#endif

#include "ringtrain/comm/communicator.h"
#include "ringtrain/comm/factory.h"
#include "ringtrain/config/config.h"
#include "ringtrain/core/allocator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/connect_store.h"
#include "ringtrain/dist/process_info.h"

namespace ringtrain {
namespace {

using Clock = std::chrono::steady_clock;

size_t parseSize(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    RT_THROW(ConfigError, "bad size '", text, "' (examples: 4096, 4K, 64M, 1G)");
  }
  const std::string unit = text.substr(pos);
  double scale = 1;
  if (unit == "K" || unit == "k" || unit == "KiB") scale = 1024.0;
  else if (unit == "M" || unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (!unit.empty() && unit != "B") RT_THROW(ConfigError, "bad size unit in '", text, "'");
  // Checked before the conversion: a double beyond size_t's range does not convert (SIGFPE here).
  constexpr double kLargest = 64.0 * 1024 * 1024 * 1024;
  RT_CHECK_T(ConfigError, value * scale >= 1 && value * scale <= kLargest, "size must be in [1, 64G]: '", text, "'");
  return static_cast<size_t>(value * scale);
}

std::string formatSize(size_t bytes) {
  if (bytes >= (1u << 30) && bytes % (1u << 30) == 0) return std::to_string(bytes >> 30) + "G";
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + "M";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

struct Args {
  std::string backend = "gloo";
  std::string min_bytes = "4K", max_bytes = "256M";
  std::vector<std::string> sizes;  // explicit list instead of the doubling sweep
  int iters = 0;                   // 0: by size (see itersFor)
  int warmup = 0;                  // 0: by size
  int segment_kb = 4096, inflight = 4, direct_kb = 16;
  bool same_host_copy = true;
  double timeout_s = 120.0;
  std::vector<std::string> algorithms = {"ring", "native"};
  bool mpi_column = true;
};

// Enough iterations for a stable median at small sizes, few at large ones (the same on every rank).
int itersFor(size_t bytes, const Args& args) {
  if (args.iters > 0) return args.iters;
  return static_cast<int>(std::clamp<size_t>((256u << 20) / bytes, 5, 100));
}
int warmupFor(size_t bytes, const Args& args) {
  if (args.warmup > 0) return args.warmup;
  return std::max(2, itersFor(bytes, args) / 10);
}

struct Measurement {
  double seconds = 0;  // slowest rank's median
  int64_t errors = 0;  // wrong elements summed over ranks
};

// Pattern whose float32 sum is exact: element i of rank r is (i % 7) + r.
void fillPattern(std::vector<float>& data, size_t count, int rank) {
  for (size_t i = 0; i < count; ++i) data[i] = static_cast<float>(i % 7 + rank);
}
int64_t countErrors(const std::vector<float>& data, size_t count, int ranks) {
  int64_t errors = 0;
  const float base = static_cast<float>(ranks * (ranks - 1) / 2);
  for (size_t i = 0; i < count; ++i) errors += data[i] != static_cast<float>(ranks * (i % 7)) + base;
  return errors;
}

using SumFn = std::function<void(comm::Buffer)>;

// Where the summed data lives: host memory, or (NCCL) a buffer on this rank's GPU that the host pattern is
// copied to and the result copied back from. Small host values (the max of medians, error counts) go
// through `scratch` on the GPU too, since NCCL reduces device memory only.
class Data {
 public:
  Data(size_t max_count, int cuda_index) : host_(max_count), cuda_(cuda_index) {
#if RINGTRAIN_HAVE_NCCL
    if (cuda_ >= 0) {
      device_ = static_cast<float*>(comm::cuda::allocate(cuda_, std::max<size_t>(max_count, 1) * sizeof(float)));
      scratch_ = comm::cuda::allocate(cuda_, sizeof(double));
    }
#endif
  }
  ~Data() {
#if RINGTRAIN_HAVE_NCCL
    if (device_ != nullptr) comm::cuda::release(device_);
    if (scratch_ != nullptr) comm::cuda::release(scratch_);
#endif
  }
  Data(const Data&) = delete;
  Data& operator=(const Data&) = delete;

  std::vector<float>& host() { return host_; }
  comm::Buffer buffer(size_t count) const {
    comm::Buffer b{device_ != nullptr ? static_cast<void*>(device_) : const_cast<float*>(host_.data()), count,
                   comm::DataType::kFloat32};
    b.device.cuda_index = device_ != nullptr ? cuda_ : -1;
    return b;
  }
  void upload(size_t count) { copy(device_, host_.data(), count * sizeof(float), true); }
  void download(size_t count) { copy(host_.data(), device_, count * sizeof(float), false); }
  // In place over ranks, for an 8-byte host value.
  void reduceValue(comm::Communicator& comm, void* value, comm::DataType dtype, comm::ReduceOp op) {
    if (device_ == nullptr) {
      comm.allreduce(comm::Buffer{value, 1, dtype}, op);
      return;
    }
    copy(scratch_, value, 8, true);
    comm::Buffer b{scratch_, 1, dtype};
    b.device.cuda_index = cuda_;
    comm.allreduce(b, op);
    copy(value, scratch_, 8, false);
  }

 private:
  void copy(void* dst, const void* src, size_t bytes, bool to_device) {
    if (device_ == nullptr || bytes == 0) return;
#if RINGTRAIN_HAVE_NCCL
    if (to_device) {
      comm::cuda::copyToDevice(dst, src, bytes);
    } else {
      comm::cuda::copyToHost(dst, src, bytes);
    }
#else
    (void)dst, (void)src, (void)to_device;
#endif
  }

  std::vector<float> host_;
  int cuda_;
  float* device_ = nullptr;
  void* scratch_ = nullptr;
};

Measurement measure(const SumFn& allreduce, comm::Communicator& control, Data& data, size_t count, int iters,
                    int warmup) {
  const comm::Buffer buffer = data.buffer(count);
  std::fill(data.host().begin(), data.host().begin() + count, 0.0f);  // zeros stay zeros however often summed
  data.upload(count);
  for (int i = 0; i < warmup; ++i) allreduce(buffer);
  control.barrier();
  std::vector<double> times(iters);
  for (int i = 0; i < iters; ++i) {
    const auto start = Clock::now();
    allreduce(buffer);
    times[i] = std::chrono::duration<double>(Clock::now() - start).count();
  }
  std::nth_element(times.begin(), times.begin() + iters / 2, times.end());
  Measurement m;
  m.seconds = times[iters / 2];
  data.reduceValue(control, &m.seconds, comm::DataType::kFloat64, comm::ReduceOp::kMax);

  fillPattern(data.host(), count, control.rank());
  data.upload(count);
  allreduce(buffer);
  data.download(count);
  m.errors = countErrors(data.host(), count, control.size());
  data.reduceValue(control, &m.errors, comm::DataType::kInt64, comm::ReduceOp::kSum);
  return m;
}

int run(const Args& args) {
  config::CommOptions options;
  options.backend = args.backend;
  options.timeout_s = args.timeout_s;
  options.ring_segment_kb = args.segment_kb;
  options.ring_inflight = args.inflight;
  options.ring_direct_kb = args.direct_kb;
  options.same_host_copy = args.same_host_copy;
  std::vector<size_t> sizes;
  if (!args.sizes.empty()) {
    for (const auto& s : args.sizes) sizes.push_back(parseSize(s));
  } else {
    const size_t smallest = parseSize(args.min_bytes), largest = parseSize(args.max_bytes);
    RT_CHECK_T(ConfigError, smallest <= largest, "--min-bytes ", args.min_bytes, " is above --max-bytes ",
               args.max_bytes, ": the sweep would be empty");
    for (size_t s = smallest; s <= largest; s *= 2) sizes.push_back(s);
  }
  for (size_t s : sizes) RT_CHECK_T(ConfigError, s % 4 == 0, "size ", s, " is not a whole number of float32");

  const dist::ProcessInfo process = dist::detectProcessInfo(dist::processEnvironment(), options);
  log::setRank(process.rank, process.world_size);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(args.timeout_s * 1000));
  std::unique_ptr<dist::Store> store = dist::connectStore(process, timeout);

  // NCCL sums GPU memory (this rank's local GPU) with its own ring: there is no host ring to compare, so the
  // table has the one native column.
  comm::Device device;
  std::vector<std::string> algorithms = args.algorithms;
  if (args.backend == "nccl") {
#if RINGTRAIN_HAVE_NCCL
    const int devices = comm::cuda::deviceCount();
    RT_CHECK_T(ConfigError, devices > process.local_rank, "--backend nccl: local rank ", process.local_rank,
               " needs a CUDA device, and this machine has ", devices);
    device.cuda_index = process.local_rank;
    algorithms = {"native"};
#else
    RT_THROW(ConfigError, "--backend nccl: this build has no NCCL backend");
#endif
  }

  // One communicator per algorithm (made in the same order on every rank); the native one also carries the
  // benchmark's own control traffic (barrier, max of medians, error counts).
  std::vector<std::unique_ptr<comm::Communicator>> comms;
  for (const auto& algorithm : algorithms) {
    RT_CHECK_T(ConfigError, algorithm == "ring" || algorithm == "native", "unknown algorithm '", algorithm,
               "' (ring | native)");
    options.allreduce_algorithm = algorithm;
    comms.push_back(comm::makeCommunicator(options, process, *store, device));
  }
  options.allreduce_algorithm = "native";
  auto control = comm::makeCommunicator(options, process, *store, device);

  std::vector<std::string> names;
  std::vector<SumFn> columns;
  for (size_t i = 0; i < comms.size(); ++i) {
    names.push_back(algorithms[i]);
    comm::Communicator* c = comms[i].get();
    columns.push_back([c](comm::Buffer b) { c->allreduce(b, comm::ReduceOp::kSum); });
  }
#if RINGTRAIN_WITH_MPI
  if (args.backend == "mpi" && args.mpi_column) {
    // The communicators' threads are idle between our calls, so this thread may use MPI (the backend asked
    // for MPI_THREAD_MULTIPLE and needs at least MPI_THREAD_SERIALIZED).
    // Started nonblocking and polled with --timeout-s as its deadline, as the backend's own operations are: a
    // blocking MPI_Allreduce never returned when a rank stopped, and mpirun does not notice a stopped rank.
    names.push_back("MPI_Allreduce");
    const auto timeout = std::chrono::duration<double>(args.timeout_s);
    columns.push_back([timeout, rank = process.rank](comm::Buffer b) {
      MPI_Request request = MPI_REQUEST_NULL;
      const int rc = MPI_Iallreduce(MPI_IN_PLACE, b.data, static_cast<int>(b.count), MPI_FLOAT, MPI_SUM,
                                    MPI_COMM_WORLD, &request);
      RT_CHECK_T(CommError, rc == MPI_SUCCESS, "MPI_Iallreduce failed on rank ", rank, ": ", rc);
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      for (int done = 0; !done;) {
        const int test = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        RT_CHECK_T(CommError, test == MPI_SUCCESS, "MPI_Test of MPI_Iallreduce failed on rank ", rank, ": ", test);
        if (!done && std::chrono::steady_clock::now() > deadline) {
          RT_THROW(TimeoutError, "MPI_Allreduce of ", b.count, " floats (the MPI_Allreduce column) did not complete "
                   "within --timeout-s ", timeout.count(), " s on rank ", rank, ": another rank is stopped, gone or "
                   "far behind");
        }
      }
    });
  }
#endif

  const int n = process.world_size;
  const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 0.0;
  Data data(sizes.empty() ? 0 : *std::max_element(sizes.begin(), sizes.end()) / 4, device.cuda_index);
  // The ratio columns compare the ring (first column) with every other column.
  const bool ring_first = !names.empty() && names[0] == "ring";
  if (process.rank == 0) {
    std::printf("# ringtrain allreduce benchmark: backend %s, %d ranks, float32 sum, ring segment %d KiB x %d in "
                "flight, same-host copy %s\n# time = slowest rank's median; algbw = bytes/time; busbw = "
                "algbw*2(n-1)/n\n#\n",
                control->backendName().c_str(), n, args.segment_kb, args.inflight,
                control->canReadPeerMemory() ? "on (ring segments read from the peer's memory)" : "off");
    std::printf("# %9s %10s %5s", "size", "count", "iters");
    for (const auto& name : names) std::printf(" | %-13s %9s %7s %7s %5s", name.c_str(), "time(us)", "algbw", "busbw", "check");
    if (ring_first) {
      for (size_t i = 1; i < names.size(); ++i) std::printf(" | ring/%s", names[i].c_str());
    }
    std::printf("\n# %9s %10s %5s", "(B)", "(elems)", "");
    for (size_t i = 0; i < names.size(); ++i) std::printf(" | %-13s %9s %7s %7s %5s", "", "", "(GB/s)", "(GB/s)", "");
    if (ring_first) {
      for (size_t i = 1; i < names.size(); ++i) std::printf(" | %*s", static_cast<int>(names[i].size() + 5), "busbw");
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  int64_t total_errors = 0;
  for (size_t bytes : sizes) {
    const size_t count = bytes / 4;
    const int iters = itersFor(bytes, args), warmup = warmupFor(bytes, args);
    std::vector<Measurement> results;
    for (const auto& column : columns) results.push_back(measure(column, *control, data, count, iters, warmup));
    for (const auto& m : results) total_errors += m.errors;
    if (process.rank != 0) continue;
    std::printf("  %9s %10zu %5d", formatSize(bytes).c_str(), count, iters);
    for (const auto& m : results) {
      const double algbw = static_cast<double>(bytes) / m.seconds / 1e9;
      std::printf(" | %-13s %9.1f %7.3f %7.3f %5s", "", m.seconds * 1e6, algbw, algbw * bus_factor,
                  m.errors == 0 ? "ok" : "WRONG");
    }
    if (ring_first) {
      for (size_t i = 1; i < results.size(); ++i) {
        std::printf(" | %*.2fx", static_cast<int>(names[i].size() + 4), results[i].seconds / results[0].seconds);
      }
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  control->barrier();
  if (total_errors != 0) {
    RT_THROW(CommError, total_errors, " elements were wrong after allreduce (see the check column)");
  }
  return 0;
}

}  // namespace
}  // namespace ringtrain

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // as the ringtrain executable does: see the header
  using namespace ringtrain;
  CLI::App app{"ringtrain allreduce benchmark (run one per rank under ringrun or mpirun)"};
  Args args;
  app.add_option("--backend", args.backend, "gloo | mpi | nccl")->check(CLI::IsMember({"gloo", "mpi", "nccl"}));
  app.add_option("--min-bytes", args.min_bytes, "smallest size of the doubling sweep (4K, 1M, ...)");
  app.add_option("--max-bytes", args.max_bytes, "largest size of the doubling sweep");
  app.add_option("--sizes", args.sizes, "explicit sizes instead of the sweep")->delimiter(',');
  app.add_option("--iters", args.iters, "timed iterations per size (default: 100 at small sizes down to 5)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--warmup", args.warmup, "warm-up iterations per size (default: iters/10, at least 2)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--segment-kb", args.segment_kb, "comm.ring_segment_kb")->check(CLI::PositiveNumber);
  app.add_option("--inflight", args.inflight, "comm.ring_inflight")->check(CLI::Range(1, 1024));
  app.add_option("--direct-kb", args.direct_kb, "comm.ring_direct_kb")->check(CLI::Range(0, 1 << 20));
  app.add_option("--same-host-copy", args.same_host_copy, "comm.same_host_copy (true|false)");
  app.add_option("--timeout-s", args.timeout_s, "comm.timeout_s")->check(CLI::PositiveNumber);
  app.add_flag("!--no-mpi-column", args.mpi_column, "with --backend mpi, leave out the plain MPI_Allreduce column");
  app.add_option("--algorithms", args.algorithms, "ring,native (either or both, in this order)")->delimiter(',');
  // "allreduce_bench", or "ringtrain bench allreduce" when that front end started it.
  const std::string self = std::filesystem::path(argc > 0 ? argv[0] : "allreduce_bench").filename().string();
  try {
    log::init();
    app.parse(argc, argv);
    return run(args);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << self << ": error: " << e.what() << " (see --help)\n";
    return kExitBadInput;
  } catch (const Error& e) {
    std::cerr << self << ": error: " << e.what() << "\n";
    return e.exitCode();
  } catch (const std::exception& e) {
    std::cerr << self << ": internal error: " << e.what() << "\n";
    return kExitFailure;
  }
}
