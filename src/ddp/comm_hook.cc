#include "ringtrain/ddp/comm_hook.h"

#include <ATen/ops/empty.h>

#include "ringtrain/core/error.h"
#include "ringtrain/ddp/tensor_buffer.h"

namespace ringtrain::ddp {
namespace {

// Waits for the wire operation, then turns the wire tensor (a sum over ranks) into the bucket's average.
// `finish` runs once, on the thread that calls wait().
class FinishingWork : public comm::Work {
 public:
  FinishingWork(comm::WorkPtr inner, at::Tensor bucket, at::Tensor wire, double divisor)
      : inner_(std::move(inner)), bucket_(std::move(bucket)), wire_(std::move(wire)), divisor_(divisor) {}

  void wait(std::chrono::milliseconds timeout) override {
    if (done_) return;
    inner_->wait(timeout);
    if (wire_.defined()) {
      bucket_.copy_(wire_);  // decompress; the wire was pre-divided
    } else if (divisor_ != 1.0) {
      bucket_.div_(divisor_);
    }
    done_ = true;
  }
  bool isCompleted() const override { return inner_->isCompleted(); }
  std::chrono::nanoseconds duration() const override { return inner_->duration(); }

 private:
  comm::WorkPtr inner_;
  at::Tensor bucket_;
  at::Tensor wire_;  // undefined: the bucket itself travelled
  double divisor_;
  bool done_ = false;  // wait() is called from one thread (finalize)
};

class AllreduceHook : public CommHook {
 public:
  comm::WorkPtr run(comm::Communicator& comm, const at::Tensor& bucket) override {
    auto inner = comm.allreduceAsync(asBuffer(bucket), comm::ReduceOp::kSum);
    return std::make_shared<FinishingWork>(std::move(inner), bucket, at::Tensor(), comm.size());
  }
  std::string name() const override { return "allreduce"; }
};

class CompressionHook : public CommHook {
 public:
  CompressionHook(c10::ScalarType wire_type, std::string name) : wire_type_(wire_type), name_(std::move(name)) {}

  comm::WorkPtr run(comm::Communicator& comm, const at::Tensor& bucket) override {
    // Pre-divide so the 16-bit sum stays in range, then cast; the cast tensor is owned by the Work.
    at::Tensor wire = comm.size() > 1 ? bucket.div(static_cast<double>(comm.size())).to(wire_type_)
                                      : bucket.to(wire_type_);
    auto inner = comm.allreduceAsync(asBuffer(wire), comm::ReduceOp::kSum);
    return std::make_shared<FinishingWork>(std::move(inner), bucket, std::move(wire), 1.0);
  }
  size_t wireBytes(size_t bucket_bytes, size_t element_size) const override {
    return bucket_bytes / element_size * 2;
  }
  std::string name() const override { return name_; }

 private:
  c10::ScalarType wire_type_;
  std::string name_;
};

}  // namespace

std::unique_ptr<CommHook> makeAllreduceHook() { return std::make_unique<AllreduceHook>(); }
std::unique_ptr<CommHook> makeFp16CompressionHook() {
  return std::make_unique<CompressionHook>(c10::ScalarType::Half, "fp16");
}
std::unique_ptr<CommHook> makeBf16CompressionHook() {
  return std::make_unique<CompressionHook>(c10::ScalarType::BFloat16, "bf16");
}

std::unique_ptr<CommHook> makeCommHook(const std::string& compression) {
  if (compression == "none") return makeAllreduceHook();
  if (compression == "fp16") return makeFp16CompressionHook();
  if (compression == "bf16") return makeBf16CompressionHook();
  RT_THROW(ConfigError, "ddp.compression: unknown value '", compression, "' (expected none, fp16 or bf16)");
}

}  // namespace ringtrain::ddp
