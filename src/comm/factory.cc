#include "ringtrain/comm/factory.h"

#include <signal.h>

#include <cstdint>
#include <sstream>

#include "backends.h"
#include "comm/local_address.h"
#include "ringtrain/build_config.h"
#include "ringtrain/comm/ring_allreduce.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::comm {
namespace {

// A peer whose process is gone closes its sockets; writing to one raises SIGPIPE, whose default action
// ends this process without a word (Gloo does not always send with MSG_NOSIGNAL). Ignored, the write fails
// with EPIPE, which the communicator reports naming the collective and the peers. A handler the program set
// is left alone.
void ignoreSigpipeUnlessHandled() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
}

bool built(const std::string& backend) {
  for (const auto& b : builtBackends()) {
    if (b == backend) return true;
  }
  return false;
}

std::string joined(const std::vector<std::string>& items) {
  std::ostringstream out;
  for (size_t i = 0; i < items.size(); ++i) out << (i ? ", " : "") << items[i];
  return out.str();
}

}  // namespace

std::vector<std::string> builtBackends() {
  std::vector<std::string> out;
#if RINGTRAIN_WITH_GLOO
  out.push_back("gloo");
#endif
#if RINGTRAIN_WITH_MPI
  out.push_back("mpi");
#endif
#if RINGTRAIN_HAVE_NCCL
  out.push_back("nccl");
#endif
  return out;
}

std::string resolveBackend(const config::CommOptions& options, const Device& device) {
  std::string backend = options.backend;
  if (backend == "auto") backend = device.isCuda() && built("nccl") ? "nccl" : "gloo";
  RT_CHECK_T(ConfigError, built(backend), "comm.backend: '", backend, "' is not built into this ringtrain (built: ",
             joined(builtBackends()), ")");
  RT_CHECK_T(ConfigError, backend != "nccl" || device.isCuda(),
             "comm.backend: nccl needs CUDA tensors, but this process runs on the CPU");
  return backend;
}

std::unique_ptr<Communicator> makeCommunicator(const config::CommOptions& options, const dist::ProcessInfo& process,
                                               dist::Store& store, Device device) {
  const std::string backend = resolveBackend(options, device);
  RT_CHECK_T(ConfigError, options.allreduce_algorithm == "ring" || options.allreduce_algorithm == "native",
             "comm.allreduce_algorithm: '", options.allreduce_algorithm, "' (expected ring or native)");
  // Each communicator gets its own key space; ranks create communicators in the same order, so each
  // rank's own counter yields the same prefix everywhere.
  const int64_t instance = store.add("comm/instances/" + std::to_string(process.rank), 1);
  auto scoped = std::make_unique<dist::PrefixStore>("comm/" + std::to_string(instance), store);

  ignoreSigpipeUnlessHandled();
  std::unique_ptr<CommunicatorBase> comm;
  if (backend == "gloo") {
#if RINGTRAIN_WITH_GLOO
    comm = makeGlooCommunicator(options, process.rank, process.world_size,
                                localAddressTowards(process.master_addr, process.master_port), std::move(scoped));
#endif
  } else if (backend == "mpi") {
#if RINGTRAIN_WITH_MPI
    comm = makeMpiCommunicator(options, process.rank, process.world_size, std::move(scoped));
#endif
  } else if (backend == "nccl") {
#if RINGTRAIN_HAVE_NCCL
    comm = makeNcclCommunicator(options, process.rank, process.world_size, device.cuda_index, std::move(scoped));
#endif
  }
  RT_CHECK(comm != nullptr, "backend ", backend, " resolved but not constructed");
  if (options.allreduce_algorithm == "ring" && backend != "nccl") {
    comm->setAllreduceAlgorithm([ring = ringOptionsFrom(options)](Communicator& c, Buffer buffer, ReduceOp op) {
      ringAllreduce(c, buffer, op, ring);
    });
  }
  return comm;
}

}  // namespace ringtrain::comm
