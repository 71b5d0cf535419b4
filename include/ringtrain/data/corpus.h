// A tokenized item corpus: one session (ordered) or basket (unordered) per line of a text file,
// whitespace-separated string tokens, as word2vec-style tools read it.
//
// In memory: one flat int32 array of vocabulary ids and one int64 offset per line (CSR), nothing per line
// beyond that. Lines left with fewer than 2 items after min_count filtering are dropped (they yield no
// pairs and no queries); line indices below are into the kept lines.
//
// Binary cache: `<corpus>.rtc` beside the source holds the vocabulary and the CSR arrays. It is keyed by
// the source's size, mtime, a hash of its first and last 64 KiB, and the options that change the result
// (min_count, skip_bad_lines, max_line_bytes); a mismatch re-parses and rewrites it. It is written to a
// temporary file and renamed into place, so concurrent ranks and crashes never leave a torn cache; an
// unwritable directory only costs a warning.
//
// Bad input (unreadable or empty file, invalid UTF-8 or control characters in a token, a line longer than
// max_line_bytes) throws DataError "<file>:<line>: ..."; with skip_bad_lines such lines are skipped and
// counted, and one warning gives the count and the first example.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringtrain/config/config.h"
#include "ringtrain/data/item_table.h"
#include "ringtrain/data/vocabulary.h"

namespace ringtrain::data {

inline constexpr int64_t kDefaultMaxLineBytes = 16 << 20;

// A read-only view of one line's ids (valid while the Corpus lives).
struct LineView {
  const int32_t* ids = nullptr;
  int64_t size = 0;
  const int32_t* begin() const { return ids; }
  const int32_t* end() const { return ids + size; }
  int32_t operator[](int64_t i) const { return ids[i]; }
};

struct CorpusStats {
  int64_t source_lines = 0;    // lines in the file
  int64_t lines = 0;           // kept lines
  int64_t tokens = 0;          // kept tokens
  int64_t dropped_tokens = 0;  // tokens of items below min_count
  int64_t short_lines = 0;     // lines dropped for having < 2 items (blank lines included)
  int64_t bad_lines = 0;       // skipped under skip_bad_lines
  int64_t unicode_space_tokens = 0;  // tokens read (before min_count) holding a space other than ASCII's (U+00A0, ...): warned
  bool from_cache = false;
  std::string cache_path;  // "" when caching was off or impossible
};

struct CorpusLoadOptions {
  std::string corpus;        // required
  std::string items;         // "" : <corpus dir>/items.tsv if it exists; "none": do not read items
  int min_count = 1;
  bool skip_bad_lines = false;
  bool cache = true;
  int64_t max_line_bytes = kDefaultMaxLineBytes;

  static CorpusLoadOptions from(const config::DataOptions& data);
};

class Corpus {
 public:
  static std::shared_ptr<const Corpus> load(const CorpusLoadOptions& options);
  static std::shared_ptr<const Corpus> load(const config::DataOptions& data) {
    return load(CorpusLoadOptions::from(data));
  }
  // Builds from in-memory lines of tokens (tests, generated data); same filtering as load, no cache.
  static std::shared_ptr<const Corpus> fromLines(const std::vector<std::vector<std::string>>& lines,
                                                 int min_count = 1);

  int64_t numLines() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t numTokens() const { return static_cast<int64_t>(tokens_.size()); }
  LineView line(int64_t i) const {
    return LineView{tokens_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]};
  }
  const Vocabulary& vocab() const { return vocab_; }
  const ItemTable& items() const { return items_; }
  const CorpusStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

  // Raw CSR arrays.
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }

 private:
  friend class CorpusBuilder;
  std::string path_;
  Vocabulary vocab_;
  ItemTable items_;
  std::vector<int32_t> tokens_;
  std::vector<int64_t> offsets_{0};
  CorpusStats stats_;
};

// The corpus a job trains on: data.corpus, or when it is empty the synthetic corpus described by the
// `synthetic` section, generated (once; deterministic from run.seed) under <run.output_dir>/data.
std::shared_ptr<const Corpus> loadJobCorpus(const config::JobConfig& job);
// The files it reads: the corpus (data.corpus, or the synthetic one's path) and items.tsv (data.items, or
// the one beside the corpus; "" for none).
std::string jobCorpusPath(const config::JobConfig& job);
std::string jobItemsPath(const config::JobConfig& job);

}  // namespace ringtrain::data
