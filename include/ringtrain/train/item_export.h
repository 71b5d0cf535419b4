// What `ringtrain export` and the end of training write: the item vectors in the word2vec text format, less
// the items that no training line contains. Those keep their initial random vectors, so `neighbors` and the
// server would answer noise for them (a real risk only with data.min_count 1, where an item may appear in
// held-out lines alone: 200 MovieLens movies). Checkpoints list them (blob "items.untrained"); one written
// before that list existed exports every item.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

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

// Puts a copy of `items_path` (the job's items.tsv) beside the export at `export_path`, where the server and
// `neighbors` look for it by default: copied atomically when no items.tsv is there, left alone when the one
// there has the same bytes (or is the file itself). One holding something else is replaced with `replace`
// (the training job's own output directory, where it is an earlier run's copy), else left alone with a
// warning naming both; one that is not a file (a directory) is warned about. Nothing happens when
// `items_path` is empty or not a file, or `export_path` is a device or pipe. A copy that fails is warned
// about: the export itself stands. Called before the export is written (renamed into place): a server
// watching the directory loads the new vectors with their names, never with the previous run's.
void placeItemsBeside(const std::string& export_path, const std::string& items_path, bool replace = false);

// Writes tokens[i] / vectors[i] for every i not in `untrained` (ascending ids), atomically.
ExportSummary writeItemVectors(const std::string& path, const std::vector<std::string>& tokens, const at::Tensor& vectors,
                               const std::vector<int32_t>& untrained);

}  // namespace ringtrain::train
