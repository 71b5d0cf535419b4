// Checkpoints: everything needed to continue a run exactly, in one file written atomically by rank 0.
//
// File layout (little-endian):
//   magic    8 bytes  "RTCKPT\0\1"
//   version  u32      kCheckpointVersion
//   flags    u32      0
//   length   u64      payload bytes
//   crc32    u32      CRC-32 (IEEE) of the payload
//   payload           a torch::serialize::OutputArchive (tensors + scalar metadata)
// Writing: temp file in the same directory, write, fsync, rename over the final name, fsync the directory,
// so a crash leaves either the old set of checkpoints or the new one, never a half file under a final name.
// Reading checks magic, version, length and CRC before deserialising, so a truncated, corrupt or foreign
// file gives a DataError naming the file and what is wrong, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/config/config.h"

namespace ringtrain::train {

inline constexpr uint32_t kCheckpointVersion = 1;

struct Checkpoint {
  int64_t global_step = 0;  // optimizer steps done
  int64_t epoch = 0;
  int world_size = 1;
  std::string config_hash;             // config::hash() of the job that wrote it
  std::string config_yaml;             // its canonical YAML (export rebuilds the model from it)
  std::string model_layout;            // SgnsModel::layoutDescription()
  std::vector<std::string> vocab;      // item tokens, index = item id
  std::map<std::string, at::Tensor> model;      // parameter name -> tensor (CPU)
  std::map<std::string, at::Tensor> optimizer;  // Optimizer::stateDict()
  std::map<std::string, std::string> blobs;     // opaque bytes: "data.position" (loader), "rng.seeds", ...
  at::Tensor torch_rng_state;                   // default CPU generator state (uint8), may be undefined
};

// Writes `ckpt` to `path` atomically. Throws DataError (with the path) on I/O failure.
void writeCheckpoint(const std::string& path, const Checkpoint& ckpt);
// Reads and validates; throws DataError naming the file on any problem. With `job`, a checkpoint another job
// wrote also throws DataError (checkSameJob).
Checkpoint readCheckpoint(const std::string& path, const config::JobConfig* job = nullptr);
// Throws DataError unless `ckpt` (read from `path`) was written by `job`, naming each setting that differs
// with its value in both. Equal config hashes are the same job. Unequal ones are compared key by key on the
// stored configuration (config::loadStored), because the hash also moves when a newer ringtrain adds a
// setting: a key the checkpoint lacks counts at its default. Returns the stored settings this version
// ignored ("section.key: value", config::loadStored), which it also logs as a warning.
std::vector<std::string> checkSameJob(const Checkpoint& ckpt, const config::JobConfig& job, const std::string& path);

// The checkpoint files of one run: <dir>/ckpt-<global step, 12 digits>.rtck.
class CheckpointManager {
 public:
  CheckpointManager(std::string dir, int keep);
  // Writes ckpt-<step>.rtck (creating dir), then deletes the checkpoints older than it but the newest
  // `keep` - 1 (one named for a later step, which loading could not read, is left alone). Returns the path
  // written.
  std::string save(const Checkpoint& ckpt);
  // Removes the temp files (.ckpt-*.rtck.tmp.<pid>) that a write killed midway left, each as large as a
  // checkpoint, warning with their names; a temp file of another process still running is left alone.
  // Call it before this process saves: one with this process's pid counts as left over.
  void removeStaleTempFiles() const;
  // Checkpoint paths, oldest first.
  std::vector<std::string> list() const;
  // Loads the newest checkpoint that reads cleanly; a corrupt newer one is skipped with a warning.
  // nullopt when there is none. With `job`, another job's checkpoint is not skipped: it throws DataError
  // (checkSameJob). If files exist but none is valid, throws DataError listing why each failed. `path`, when
  // given, receives the file loaded.
  std::optional<Checkpoint> loadLatest(const config::JobConfig* job = nullptr, std::string* path = nullptr) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int keep_;
};

// The job's checkpoint directory: checkpoint.dir, or <run.output_dir>/checkpoints.
std::string checkpointDir(const config::JobConfig& job);

// What `ringtrain eval` and `export` read for --checkpoint: `requested` as a file, or, when it is a directory
// or empty (then the job's checkpointDir), the newest checkpoint there that reads cleanly
// (CheckpointManager::loadLatest: one cut short by a crash is skipped). `path` receives the file read.
// DataError when the directory holds none.
Checkpoint readRequestedCheckpoint(const std::string& requested, const config::JobConfig& job,
                                   std::string* path = nullptr);

// The default CPU generator's state, and restoring it (for bitwise resume).
at::Tensor captureTorchRngState();
void restoreTorchRngState(const at::Tensor& state);

// CRC-32 (IEEE 802.3, reflected, as zlib's crc32).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace ringtrain::train
