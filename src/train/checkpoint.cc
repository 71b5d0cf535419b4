#include "ringtrain/train/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ringtrain/core/error.h"
#include "ringtrain/core/file_target.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::train {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'R', 'T', 'C', 'K', 'P', 'T', '\0', '\1'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 4;

// The payload is an OutputArchive of tensors only ("t<i>") plus "index": the names, one per line, as bytes.
// Names and strings travel as uint8 tensors, which keeps every value binary-safe.
at::Tensor bytesTensor(const std::string& bytes) {
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  if (!bytes.empty()) std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return t;
}

std::string tensorBytes(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU).contiguous();
  if (c.scalar_type() != at::kByte || c.dim() != 1) RT_THROW(DataError, "expected a byte string");
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
}

template <typename T>
void putLe(std::string& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff));
}

template <typename T>
T getLe(const std::string& in, size_t offset) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[offset + i])) << (8 * i);
  return static_cast<T>(v);
}

std::string joinLines(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) {
    out += s;
    out.push_back('\n');
  }
  return out;
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) RT_THROW(DataError, "unterminated name list");
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string encodePayload(const Checkpoint& ckpt) {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    RT_CHECK(name.find('\n') == std::string::npos, "checkpoint entry name with a newline");
    names.push_back(name);
    tensors.push_back(t.detach().to(at::kCPU).contiguous());
  };
  add("meta/global_step", at::scalar_tensor(ckpt.global_step, at::kLong));
  add("meta/epoch", at::scalar_tensor(ckpt.epoch, at::kLong));
  add("meta/world_size", at::scalar_tensor(static_cast<int64_t>(ckpt.world_size), at::kLong));
  add("meta/config_hash", bytesTensor(ckpt.config_hash));
  add("meta/config_yaml", bytesTensor(ckpt.config_yaml));
  add("meta/model_layout", bytesTensor(ckpt.model_layout));
  for (const std::string& token : ckpt.vocab) {
    RT_CHECK_T(DataError, token.find('\n') == std::string::npos, "vocabulary token with a newline");
  }
  add("meta/vocab", bytesTensor(joinLines(ckpt.vocab)));
  for (const auto& [k, v] : ckpt.model) add("model/" + k, v);
  for (const auto& [k, v] : ckpt.optimizer) add("optim/" + k, v);
  for (const auto& [k, v] : ckpt.blobs) add("blob/" + k, bytesTensor(v));
  if (ckpt.torch_rng_state.defined()) add("rng/torch", ckpt.torch_rng_state);

  torch::serialize::OutputArchive archive;
  archive.write("index", bytesTensor(joinLines(names)), /*is_buffer=*/true);
  for (size_t i = 0; i < tensors.size(); ++i) archive.write("t" + std::to_string(i), tensors[i], /*is_buffer=*/true);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

Checkpoint decodePayload(const std::string& payload) {
  torch::serialize::InputArchive archive;
  archive.load_from(payload.data(), payload.size());
  at::Tensor index;
  archive.read("index", index, /*is_buffer=*/true);
  const std::vector<std::string> names = splitLines(tensorBytes(index));
  Checkpoint ckpt;
  bool have_step = false;
  for (size_t i = 0; i < names.size(); ++i) {
    at::Tensor t;
    archive.read("t" + std::to_string(i), t, /*is_buffer=*/true);
    const std::string& name = names[i];
    const size_t slash = name.find('/');
    if (slash == std::string::npos) RT_THROW(DataError, "bad entry name '", name, "'");
    const std::string group = name.substr(0, slash), key = name.substr(slash + 1);
    if (group == "meta") {
      if (key == "global_step") {
        ckpt.global_step = t.item<int64_t>();
        have_step = true;
      } else if (key == "epoch") {
        ckpt.epoch = t.item<int64_t>();
      } else if (key == "world_size") {
        ckpt.world_size = static_cast<int>(t.item<int64_t>());
      } else if (key == "config_hash") {
        ckpt.config_hash = tensorBytes(t);
      } else if (key == "config_yaml") {
        ckpt.config_yaml = tensorBytes(t);
      } else if (key == "model_layout") {
        ckpt.model_layout = tensorBytes(t);
      } else if (key == "vocab") {
        ckpt.vocab = splitLines(tensorBytes(t));
      }
    } else if (group == "model") {
      ckpt.model[key] = t;
    } else if (group == "optim") {
      ckpt.optimizer[key] = t;
    } else if (group == "blob") {
      ckpt.blobs[key] = tensorBytes(t);
    } else if (group == "rng" && key == "torch") {
      ckpt.torch_rng_state = t;
    }
  }
  if (!have_step) RT_THROW(DataError, "no global step recorded");
  return ckpt;
}

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void writeCheckpoint(const std::string& requested, const Checkpoint& ckpt) {
  const std::string path = atomicWriteTarget(requested);
  const std::string payload = encodePayload(ckpt);
  std::string header;
  header.append(kMagic, sizeof(kMagic));
  putLe<uint32_t>(header, kCheckpointVersion);
  putLe<uint32_t>(header, 0);
  putLe<uint64_t>(header, payload.size());
  putLe<uint32_t>(header, crc32(payload.data(), payload.size()));

  AtomicFile file(path, "checkpoint");
  file.write(header);
  file.write(payload);
  file.commit();
}

Checkpoint readCheckpoint(const std::string& path, const config::JobConfig* job) {
  // A FIFO would block the read, a device (/dev/zero) would fill memory, a directory fails inside the stream.
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) RT_THROW(DataError, "checkpoint ", path, ": cannot open: ", std::strerror(errno));
  if (!S_ISREG(info.st_mode)) {
    RT_THROW(DataError, "checkpoint ", path, ": not a regular file (",
             S_ISDIR(info.st_mode) ? "a directory" : S_ISFIFO(info.st_mode) ? "a FIFO" : "a device or socket", ")");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) RT_THROW(DataError, "checkpoint ", path, ": cannot open: ", std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < sizeof(kMagic) || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    RT_THROW(DataError, "checkpoint ", path, ": not a ringtrain checkpoint (bad magic; ", data.size(), " bytes)");
  }
  if (data.size() < kHeaderBytes) {
    RT_THROW(DataError, "checkpoint ", path, ": truncated header (", data.size(), " of ", kHeaderBytes, " bytes)");
  }
  const uint32_t version = getLe<uint32_t>(data, 8);
  if (version != kCheckpointVersion) {
    RT_THROW(DataError, "checkpoint ", path, ": format version ", version, ", this build reads ", kCheckpointVersion);
  }
  const uint64_t length = getLe<uint64_t>(data, 16);
  const uint32_t crc = getLe<uint32_t>(data, 24);
  if (data.size() - kHeaderBytes != length) {
    RT_THROW(DataError, "checkpoint ", path, ": truncated or padded: header says ", length, " payload bytes, file has ",
             data.size() - kHeaderBytes);
  }
  const std::string payload = data.substr(kHeaderBytes);
  if (crc32(payload.data(), payload.size()) != crc) {
    RT_THROW(DataError, "checkpoint ", path, ": corrupt (CRC-32 of the payload does not match the header)");
  }
  Checkpoint ckpt;
  try {
    ckpt = decodePayload(payload);
  } catch (const DataError& e) {
    RT_THROW(DataError, "checkpoint ", path, ": ", e.what());
  } catch (const c10::Error& e) {  // LibTorch's what() carries a C++ backtrace: not for a user's file
    RT_THROW(DataError, "checkpoint ", path, ": unreadable payload: ", e.what_without_backtrace());
  } catch (const std::exception& e) {
    RT_THROW(DataError, "checkpoint ", path, ": unreadable payload: ", e.what());
  }
  if (job != nullptr) checkSameJob(ckpt, *job, path);
  return ckpt;
}

std::vector<std::string> checkSameJob(const Checkpoint& ckpt, const config::JobConfig& job,
                                      const std::string& path) {
  const std::string hash = config::hash(job);
  if (ckpt.config_hash == hash) return {};
  if (ckpt.config_yaml.empty()) {
    RT_THROW(DataError, "checkpoint ", path, " belongs to another job: config hash ", ckpt.config_hash,
             ", this job's is ", hash, " (different configuration; use a fresh checkpoint.dir)");
  }
  std::vector<std::string> ignored;
  config::JobConfig stored;
  try {
    stored = config::loadStored(ckpt.config_yaml, path + " (stored configuration)", &ignored);
  } catch (const ConfigError& e) {
    RT_THROW(DataError, "checkpoint ", path, " cannot be compared with this job (config hash ", ckpt.config_hash,
             ", this job's is ", hash, "): its stored configuration does not load in this version: ", e.what());
  }
  const std::string ignored_text = fmt::format("{}", fmt::join(ignored, "; "));
  const std::vector<config::IdentityDifference> differences = config::identityDifferences(stored, job);
  if (!differences.empty()) {
    constexpr size_t kShown = 8;
    std::string list;
    for (size_t i = 0; i < differences.size() && i < kShown; ++i) {
      const config::IdentityDifference& d = differences[i];
      list += (i ? "; " : "") + d.key + " is " + d.first + " there and " + d.second + " here";
    }
    if (differences.size() > kShown) list += fmt::format("; and {} more", differences.size() - kShown);
    RT_THROW(DataError, "checkpoint ", path, " belongs to another job: ", list,
             ignored.empty() ? "" : " (it also has settings this version lacks: " + ignored_text + ")",
             "; resume with its settings, or start afresh in another checkpoint.dir");
  }
  if (!ignored.empty()) {
    ringtrain::warn("checkpoint {} was written by another ringtrain version; its settings match this job's except "
                    "these, which this version lacks or refuses and ignores: {}", path, ignored_text);
  }
  return ignored;
}

CheckpointManager::CheckpointManager(std::string dir, int keep) : dir_(std::move(dir)), keep_(std::max(1, keep)) {}

std::string CheckpointManager::save(const Checkpoint& ckpt) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) RT_THROW(DataError, "cannot create checkpoint directory ", dir_, ": ", ec.message());
  char name[64];
  std::snprintf(name, sizeof(name), "ckpt-%012lld.rtck", static_cast<long long>(ckpt.global_step));
  const std::string path = (fs::path(dir_) / name).string();
  writeCheckpoint(path, ckpt);
  // Only checkpoints older than this one give way: a file named for a later step can only be one that
  // loadLatest() could not read (else the run would have resumed from it), and counting it would remove
  // this run's own, the one just written included.
  std::vector<std::string> older;
  for (const std::string& file : list()) {
    // Names hold the step in fixed width: they sort by step.
    if (fs::path(file).filename() < fs::path(path).filename()) older.push_back(file);
  }
  const size_t keep_older = static_cast<size_t>(keep_ - 1);
  for (size_t i = 0; i + keep_older < older.size(); ++i) {
    fs::remove(older[i], ec);
    if (ec) ringtrain::warn("cannot remove old checkpoint {}: {}", older[i], ec.message());
  }
  return path;
}

void CheckpointManager::removeStaleTempFiles() const {
  // This process has written nothing yet (see the header): a file with its pid is a gone writer's too.
  removeTempsOfGoneWriters(
      dir_,
      [](const std::string& name) {
        const size_t tmp = name.rfind(".rtck.tmp.");
        return name.rfind(".ckpt-", 0) == 0 && tmp != std::string::npos ? name.substr(0, tmp + 10) : std::string();
      },
      "a checkpoint write");
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == 5 + 12 + 5 && name.rfind("ckpt-", 0) == 0 && name.substr(name.size() - 5) == ".rtck") {
      out.push_back(entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<Checkpoint> CheckpointManager::loadLatest(const config::JobConfig* job, std::string* path) const {
  const std::vector<std::string> all = list();
  std::string failures;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    Checkpoint ckpt;
    try {
      ckpt = readCheckpoint(*it);
    } catch (const DataError& e) {
      ringtrain::warn("skipping unreadable checkpoint: {}", e.what());
      failures += std::string("\n  ") + e.what();
      continue;
    }
    if (job != nullptr) checkSameJob(ckpt, *job, *it);
    if (path != nullptr) *path = *it;
    return ckpt;
  }
  if (!all.empty()) RT_THROW(DataError, "no valid checkpoint in ", dir_, ":", failures);
  return std::nullopt;
}

std::string checkpointDir(const config::JobConfig& job) {
  return job.checkpoint.dir.empty() ? (fs::path(job.run.output_dir) / "checkpoints").string() : job.checkpoint.dir;
}

Checkpoint readRequestedCheckpoint(const std::string& requested, const config::JobConfig& job, std::string* path) {
  const std::string source = requested.empty() ? checkpointDir(job) : requested;
  std::error_code not_a_directory;
  if (requested.empty() || fs::is_directory(source, not_a_directory)) {
    std::string read;
    // `keep` only matters for saving.
    std::optional<Checkpoint> latest = CheckpointManager(source, 1).loadLatest(nullptr, &read);
    if (!latest) RT_THROW(DataError, "no checkpoint in ", source);
    if (path != nullptr) *path = read;
    return std::move(*latest);
  }
  if (path != nullptr) *path = source;
  return readCheckpoint(source);
}

at::Tensor captureTorchRngState() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void restoreTorchRngState(const at::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace ringtrain::train
