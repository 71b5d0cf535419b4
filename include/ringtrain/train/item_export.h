// What `ringtrain export` and the end of training write: the item vectors in the word2vec text format, less
// the items that training never paired: in no training line, or (basket mode) only in baskets that list it
// alone. Those keep their initial random vectors, so `neighbors` and the server would answer noise for them
// (a real risk only with data.min_count 1, where an item may appear in held-out lines alone: 200 MovieLens
// movies). Checkpoints list them (blob "items.untrained"); one written
// before that list existed exports every item.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ringtrain/core/file_target.h"
#include "ringtrain/train/checkpoint.h"

namespace ringtrain::train {

inline constexpr char kUntrainedItemsBlob[] = "items.untrained";

// The ids of items whose training count is 0, ascending.
std::vector<int32_t> untrainedItems(const std::vector<int64_t>& train_counts);
// The blob's text ("3 17 42") and back; DataError naming `origin` for a malformed or out-of-range list.
std::string encodeItemIds(const std::vector<int32_t>& ids);
std::vector<int32_t> decodeItemIds(const std::string& text, int64_t vocab, const std::string& origin);
// The checkpoint's list (read from `origin`), or none for a checkpoint written before it existed.
std::vector<int32_t> untrainedItems(const Checkpoint& ckpt, const std::string& origin);

struct ExportSummary {
  int64_t written = 0;
  int64_t left_out = 0;
};

// A copy of `items_path` (the job's items.tsv) for beside the export at `export_path`, where the server and
// `neighbors` look for it by default. Made (as a temp file) before the export is written and put in place
// (renamed) by place() after it is: an export that fails leaves the names beside the old vectors as they
// were, and a server watching the directory, which loads an export once it stayed unchanged for an interval,
// finds the new names beside the new vectors. Nothing is staged when no items.tsv is needed there: one with
// the same bytes is there already (or is the file itself); one holding something else is replaced only with
// `replace` (the training job's own output directory, where it is an earlier run's copy), else left alone
// with a warning naming both; one that is not a file (a directory) is warned about; `items_path` is empty or
// not a file (then an earlier run's items.tsv is removed by place() with `replace`, as it would name the new
// vectors); `export_path` is a device or pipe. A copy that fails is warned about: the export itself stands.
class ItemsBeside {
 public:
  ItemsBeside(const std::string& export_path, const std::string& items_path, bool replace = false);
  // `ringtrain export`'s: an items.tsv there that names any of `tokens` (the exported items) otherwise than
  // `items_path` does (another name, category or key, or none; any name at all where `items_path` is empty
  // or not a file) is refused (ConfigError, before anything is written): a server watching the folder would
  // serve the new vectors under its names. One that names them alike (a catalogue covering them) is left
  // alone without a word.
  ItemsBeside(const std::string& export_path, const std::string& items_path, const std::vector<std::string>& tokens);
  ~ItemsBeside();  // removes a copy not placed (AtomicFile's destructor)
  ItemsBeside(const ItemsBeside&) = delete;
  ItemsBeside& operator=(const ItemsBeside&) = delete;
  // After the export is written: the copy renamed to items.tsv beside it. Once.
  void place();

 private:
  void warnNotCopied(const std::string& reason) const;
  void stage(const std::string& export_path, bool replace, const std::vector<std::string>* tokens);

  std::string items_path_;
  std::unique_ptr<AtomicFile> staged_;  // the copy, written and not yet committed; null when nothing is to be placed
  // An earlier run's items.tsv in the run's own folder (`replace`) where this job has none: removed by place().
  std::string stale_;
  std::string target_;
  // Why the copy could not be staged: said by place(), after the export, so that an export that fails (the
  // same folder, most often) says so alone.
  std::optional<std::string> not_staged_;
};

// Refuses (ConfigError, naming `key`) an export path that is one of `inputs` ({what, path}): the vectors
// would replace a file the job reads (its corpus, items file, a checkpoint). A path that does not exist is
// none of them.
void refuseInputsAsExport(const std::string& key, const std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& inputs);
// Refuses (ConfigError, naming `key`) an export path that is, by name or through a link, the items.tsv that
// ItemsBeside copies the names to: one would replace the other.
void refuseItemsCopyAsExport(const std::string& key, const std::string& out);

// Writes tokens[i] / vectors[i] for every i not in `untrained` (ascending ids), atomically.
ExportSummary writeItemVectors(const std::string& path, const std::vector<std::string>& tokens, const at::Tensor& vectors,
                               const std::vector<int32_t>& untrained);

}  // namespace ringtrain::train
