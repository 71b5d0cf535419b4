#include "ringtrain/train/item_export.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/file_target.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/items_file.h"
#include "ringtrain/model/word2vec_io.h"

namespace ringtrain::train {

std::vector<int32_t> untrainedItems(const std::vector<int64_t>& train_counts) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < train_counts.size(); ++i) {
    if (train_counts[i] == 0) out.push_back(static_cast<int32_t>(i));
  }
  return out;
}

std::string encodeItemIds(const std::vector<int32_t>& ids) {
  std::string text;
  for (const int32_t id : ids) {
    if (!text.empty()) text.push_back(' ');
    text += std::to_string(id);
  }
  return text;
}

std::vector<int32_t> decodeItemIds(const std::string& text, int64_t vocab, const std::string& origin) {
  std::vector<int32_t> ids;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    if (*p == ' ') {
      ++p;
      continue;
    }
    int32_t id = 0;
    const auto [next, ec] = std::from_chars(p, end, id);
    if (ec != std::errc() || id < 0 || id >= vocab || (!ids.empty() && id <= ids.back())) {
      RT_THROW(DataError, origin, ": malformed list of untrained items near '", std::string(p, std::min<size_t>(20, end - p)),
               "'");
    }
    ids.push_back(id);
    p = next;
  }
  return ids;
}

std::vector<int32_t> untrainedItems(const Checkpoint& ckpt, const std::string& origin) {
  const auto listed = ckpt.blobs.find(kUntrainedItemsBlob);
  if (listed == ckpt.blobs.end()) return {};
  return decodeItemIds(listed->second, static_cast<int64_t>(ckpt.vocab.size()), origin);
}

namespace {
// Whether two files hold the same bytes (sizes first, then 64 KiB at a time); false when either is unreadable.
bool sameBytes(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  if (std::filesystem::file_size(a, ec1) != std::filesystem::file_size(b, ec2) || ec1 || ec2) return false;
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::vector<char> ba(1 << 16), bb(1 << 16);
  while (fa && fb) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount() || !std::equal(ba.begin(), ba.begin() + fa.gcount(), bb.begin())) return false;
  }
  return fa.eof() && fb.eof();
}
}  // namespace

void refuseInputsAsExport(const std::string& key, const std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& inputs) {
  for (const auto& [what, path] : inputs) {
    std::error_code ec;
    if (!path.empty() && std::filesystem::equivalent(out, path, ec)) {
      RT_THROW(ConfigError, key, " ", out, " is the ", what, " (", path, "): the vectors would replace it");
    }
  }
}

namespace {
// Where ItemsBeside puts the names of an export at `export_path`: beside the name given (not beside what a
// link leads to).
std::filesystem::path itemsCopyPath(const std::string& export_path, std::error_code& ec) {
  return std::filesystem::absolute(export_path, ec).parent_path() / "items.tsv";
}
}  // namespace

void refuseItemsCopyAsExport(const std::string& key, const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec_beside, ec_written, ec_names;
  const fs::path beside = itemsCopyPath(out, ec_beside);
  // Compared where the links lead: the vectors are written through a link, to its target.
  const auto written_at = fs::weakly_canonical(atomicWriteTarget(out), ec_written);
  const auto names_at = fs::weakly_canonical(beside, ec_names);
  if (!ec_beside && !ec_written && !ec_names && written_at == names_at) {
    RT_THROW(ConfigError, key, " ", out, ": the items' names are put beside the vectors as items.tsv; give the "
             "vectors another name (embeddings.txt)");
  }
}

namespace {
// "" when the items files `there` and `here` name every one of `tokens` alike (name, category and key, by the
// rule the server and `neighbors` read them with), else the first item they name otherwise, as a phrase. An
// empty `here` names nothing. A `there` that cannot be read names nothing alike.
std::string namingDifference(const std::string& there, const std::string& here, const std::vector<std::string>& tokens) {
  std::unordered_map<std::string, int64_t> row_of;
  for (size_t i = 0; i < tokens.size(); ++i) row_of.emplace(tokens[i], static_cast<int64_t>(i));
  const auto find = [&](const std::string& token) -> int64_t {
    const auto it = row_of.find(token);
    return it == row_of.end() ? -1 : it->second;
  };
  const auto rows = static_cast<int64_t>(tokens.size());
  data::TokenNames theirs;
  try {
    theirs = data::nameTokens(there, rows, find);
  } catch (const DataError& e) {
    return std::string("it cannot be read: ") + e.what();
  }
  data::TokenNames ours;
  ours.names.assign(tokens.size(), "");
  ours.categories.assign(tokens.size(), "");
  ours.keys.assign(tokens.size(), "");
  if (!here.empty()) ours = data::nameTokens(here, rows, find);
  using ::ringtrain::detail::printable;
  const auto said = [](const std::string& name) { return name.empty() ? std::string("unnamed") : "'" + printable(name) + "'"; };
  for (size_t r = 0; r < tokens.size(); ++r) {
    if (theirs.names[r] == ours.names[r] && theirs.categories[r] == ours.categories[r] && theirs.keys[r] == ours.keys[r]) {
      continue;
    }
    if (theirs.names[r] != ours.names[r]) {
      return "item '" + printable(tokens[r]) + "' is " + said(theirs.names[r]) + " there and " + said(ours.names[r]) +
             " here";
    }
    return "item '" + printable(tokens[r]) + "' has category '" + printable(theirs.categories[r]) + "' and key '" +
           printable(theirs.keys[r]) + "' there, '" + printable(ours.categories[r]) + "' and '" +
           printable(ours.keys[r]) + "' here";
  }
  return "";
}
}  // namespace

ItemsBeside::ItemsBeside(const std::string& export_path, const std::string& items_path, bool replace)
    : items_path_(items_path) {
  stage(export_path, replace, nullptr);
}

ItemsBeside::ItemsBeside(const std::string& export_path, const std::string& items_path,
                         const std::vector<std::string>& tokens)
    : items_path_(items_path) {
  stage(export_path, /*replace=*/false, &tokens);
}

void ItemsBeside::stage(const std::string& export_path, bool replace, const std::vector<std::string>* tokens) {
  const std::string& items_path = items_path_;
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool have_items = !items_path.empty() && fs::is_regular_file(items_path, ec);
  // An export to a device or pipe (-o /dev/stdout) has no folder of its own to name items in; one not
  // written yet does.
  if (fs::exists(export_path, ec) && !fs::is_regular_file(export_path, ec)) return;
  const fs::path target = itemsCopyPath(export_path, ec);
  if (ec) return;
  const bool target_exists = fs::exists(target, ec);
  if (target_exists && !fs::is_regular_file(target, ec)) {
    if (have_items) {
      warn("{} is not a file (a directory?): serve and neighbors find no names there; give them --items {}",
           target.string(), items_path);
    }
    return;
  }
  if (!have_items) {
    // No names to put there (data.items: none, or not found): an items.tsv already there would name the new
    // vectors with what it says, an older run's names most often.
    if (!target_exists) return;
    if (tokens != nullptr) {
      const std::string difference = namingDifference(target.string(), "", *tokens);
      if (difference.empty()) return;  // it names none of them
      RT_THROW(ConfigError, target.string(), " names the exported items (", difference, "), and this job has no "
               "items file to put in its place: serve and neighbors, which read the items.tsv beside the vectors, "
               "would show them under its names; export into another folder, or remove ", target.string());
    }
    if (replace) stale_ = target.string();  // an earlier run's copy in the run's own folder: place() removes it
    return;
  }
  if (target_exists) {
    if (fs::equivalent(target, items_path, ec) || sameBytes(target, items_path)) return;
    if (tokens != nullptr) {
      const std::string difference = namingDifference(target.string(), items_path, *tokens);
      if (difference.empty()) return;
      RT_THROW(ConfigError, target.string(), " names the exported items otherwise than ", items_path, " (",
               difference, "): serve and neighbors, which read the items.tsv beside the vectors, would show "
               "them under its names; export into another folder, or remove or replace ", target.string());
    }
    if (!replace) {
      warn("{} holds other items than {}: left as it is. serve and neighbors read the items.tsv beside the "
           "vectors; give them --items {}", target.string(), items_path, items_path);
      return;
    }
  }
  fs::create_directories(target.parent_path(), ec);  // the export, written next, would make it too
  target_ = target.string();
  try {
    auto copy = std::make_unique<AtomicFile>(target_, "copy of the items");
    std::ifstream in(items_path, std::ios::binary);
    std::vector<char> buffer(1 << 16);
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      copy->write({buffer.data(), static_cast<size_t>(in.gcount())});
    }
    if (!in.eof()) RT_THROW(DataError, "cannot read ", items_path);
    staged_ = std::move(copy);
  } catch (const std::exception& e) {
    not_staged_ = e.what();
  }
}

void ItemsBeside::warnNotCopied(const std::string& reason) const {
  warn("cannot copy {} beside the vectors to {} ({}): give serve and neighbors --items {}", items_path_, target_,
       reason, items_path_);
}

ItemsBeside::~ItemsBeside() = default;

void ItemsBeside::place() {
  if (!stale_.empty()) {
    std::error_code ec;
    std::filesystem::remove(stale_, ec);
    if (ec) {
      warn("cannot remove {}, an earlier run's names, from beside the vectors ({}): serve and neighbors would read "
           "them; this job has no items file", stale_, ec.message());
    } else {
      info("removed {}, an earlier run's names, from beside the vectors: this job has no items file", stale_);
    }
    stale_.clear();
  }
  if (not_staged_) warnNotCopied(*std::exchange(not_staged_, std::nullopt));
  if (!staged_) return;
  const std::unique_ptr<AtomicFile> copy = std::move(staged_);
  try {
    copy->commit();
  } catch (const std::exception& e) {
    warnNotCopied(e.what());
    return;
  }
  info("copied {} to {}, beside the vectors, where serve and neighbors look for names", items_path_, target_);
}

ExportSummary writeItemVectors(const std::string& path, const std::vector<std::string>& tokens, const at::Tensor& vectors,
                               const std::vector<int32_t>& untrained) {
  RT_CHECK_EQ(static_cast<int64_t>(tokens.size()), vectors.size(0), "one token per vector");
  ExportSummary summary;
  summary.left_out = static_cast<int64_t>(untrained.size());
  if (untrained.empty()) {
    model::writeWord2Vec(path, tokens, vectors);
    summary.written = static_cast<int64_t>(tokens.size());
    return summary;
  }
  std::vector<std::string> kept_tokens;
  std::vector<int64_t> kept;
  size_t next = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (next < untrained.size() && static_cast<size_t>(untrained[next]) == i) {
      ++next;
      continue;
    }
    kept.push_back(static_cast<int64_t>(i));
    kept_tokens.push_back(tokens[i]);
  }
  const at::Tensor index = at::tensor(kept, at::TensorOptions().dtype(at::kLong)).to(vectors.device());
  model::writeWord2Vec(path, kept_tokens, vectors.index_select(0, index));
  summary.written = static_cast<int64_t>(kept.size());
  return summary;
}

}  // namespace ringtrain::train
