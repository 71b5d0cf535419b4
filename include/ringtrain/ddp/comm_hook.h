// How a dense gradient bucket travels. The synchronizer hands each full bucket (one flat tensor holding the
// gradients of several parameters, summed locally) to a CommHook, which starts the communication and
// returns a Work; when that Work's wait() returns, the bucket must hold the AVERAGE over all ranks.
// The built-in hooks: plain allreduce in the bucket's own dtype, and fp16 / bf16 compression (the bucket is
// pre-divided by the world size and cast to 16 bits, allreduced in 16 bits, and cast back into the bucket
// inside wait()). A hook is called from the thread that runs backward, in the same bucket order on every
// rank; its Work's wait() is called from the thread that calls finalize().
#pragma once

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "ringtrain/comm/communicator.h"

namespace ringtrain::ddp {

class CommHook {
 public:
  virtual ~CommHook() = default;
  // Starts averaging `bucket` (contiguous, flat) over `comm`. The returned Work keeps whatever it needs
  // alive; after its wait(), `bucket` holds the average. Must issue the same collectives on every rank.
  // Called from the autograd thread that readied the bucket (or from finalize()), in bucket order, without
  // DistributedDataParallel's locks held: it may wait for its own work. One that throws fails the step:
  // backward rethrows it, finalize() throws it once the other buckets' collectives are done, and the
  // DistributedDataParallel object should not be used for another step.
  virtual comm::WorkPtr run(comm::Communicator& comm, const at::Tensor& bucket) = 0;
  // Bytes this hook hands to the communicator for a bucket of `bucket_bytes` bytes (statistics).
  virtual size_t wireBytes(size_t bucket_bytes, size_t element_size) const { return bucket_bytes; }
  virtual std::string name() const = 0;
};

// Allreduce (sum) in the bucket's dtype, divided by the world size inside wait().
std::unique_ptr<CommHook> makeAllreduceHook();
// Compression to float16 / bfloat16 for the wire. Relative error per element ~1e-3 (fp16; values must fit
// its range after division by the world size) or ~1e-2 (bf16).
std::unique_ptr<CommHook> makeFp16CompressionHook();
std::unique_ptr<CommHook> makeBf16CompressionHook();
// "none" | "fp16" | "bf16" (config ddp.compression); throws ConfigError otherwise.
std::unique_ptr<CommHook> makeCommHook(const std::string& compression);

}  // namespace ringtrain::ddp
