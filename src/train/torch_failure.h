// What a LibTorch error says to a person: its first line (its what() carries a C++ backtrace), and for the
// one a user causes most, an allocation that failed, which settings make it.
#pragma once

#include <string>

#include <c10/util/Exception.h>

namespace ringtrain::train {

// What to change when memory runs out, host or GPU alike.
inline constexpr const char* kOutOfMemoryAdvice =
    "the batches or the model need more than this machine (or GPU) gives; lower data.batch_size, data.negatives "
    "or model.dim, or run fewer ranks per host";

// A std::bad_alloc, in the same words wherever it is caught (main(), and the record ringrun prints).
inline std::string describeBadAlloc() { return std::string("out of memory: ") + kOutOfMemoryAdvice; }

inline std::string describeTorchFailure(const c10::Error& e) {
  const std::string what = e.what_without_backtrace();
  // The CPU allocator's words, and CUDA's ("CUDA out of memory", c10::OutOfMemoryError).
  if (what.find("can't allocate memory") != std::string::npos || what.find("DefaultCPUAllocator") != std::string::npos ||
      what.find("out of memory") != std::string::npos) {
    return std::string("out of memory (LibTorch could not allocate): ") + kOutOfMemoryAdvice + " (" + what + ")";
  }
  return "internal error (LibTorch): " + what;
}

}  // namespace ringtrain::train
