// Corpus parsing and the binary cache. Parsing streams the file through one buffer (never the whole file
// in memory), interns tokens in an open-addressing table whose keys live in one character arena, and
// writes provisional ids into the flat token array; a final pass renumbers ids by descending count,
// drops items below min_count and lines left with < 2 items, compacting the array in place.
#include "ringtrain/data/corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "core/input_file.h"
#include "core/process_state.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/hash.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::data {
namespace {

constexpr char kCacheMagic[8] = {'R', 'T', 'C', 'O', 'R', 'P', 'U', 'S'};
constexpr uint64_t kCacheVersion = 6;  // 2: ctime and inode in the key; 3: tokens holding a Unicode space;
                                       // 4: a checksum of the payload; 5: a CR inside a line is refused;
                                       // 6: invisible characters counted with the spaces

// The cache's payload as one hash: a cache whose bytes changed after it was written (a bad disk, a stray
// write) yet still parses would otherwise train on other data, found out only when a checkpoint's corpus
// fingerprint no longer matches.
template <typename... Vecs>
uint64_t payloadChecksum(const Vecs&... v) {
  uint64_t h = kFnv1aOffsetBasis;
  ((h = fnv1aWords64(v.data(), v.size() * sizeof(v[0]), h)), ...);
  return h;
}
constexpr size_t kHashWindow = 64 << 10;
constexpr size_t kReadChunk = 4 << 20;

std::string errnoText() { return std::strerror(errno); }

// RAII FILE*.
struct File {
  std::FILE* f = nullptr;
  File() = default;
  explicit File(std::FILE* file) : f(file) {}
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (f) std::fclose(f);
  }
};

// What says the corpus is the one the cache was built from. Size, mtime and the first and last 64 KiB alone
// missed an edit in the middle that kept size and mtime (touch -r, tar, coarse timestamps); the inode change
// time cannot be set back, and moves on every write.
struct SourceKey {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint64_t inode = 0;
  uint64_t hash = 0;
};

SourceKey sourceKey(const std::string& path, std::FILE* f) {
  struct stat st {};
  if (::fstat(fileno(f), &st) != 0) RT_THROW(DataError, path, ": cannot stat: ", errnoText());
  SourceKey key;
  key.size = static_cast<uint64_t>(st.st_size);
  key.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  key.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000LL + st.st_ctim.tv_nsec;
  key.inode = static_cast<uint64_t>(st.st_ino);
  std::vector<char> buf(kHashWindow);
  const ssize_t head = ::pread(fileno(f), buf.data(), buf.size(), 0);
  uint64_t h = fnv1a64(buf.data(), head > 0 ? static_cast<size_t>(head) : 0);
  if (key.size > kHashWindow) {
    const off_t off = static_cast<off_t>(key.size - kHashWindow);
    const ssize_t got = ::pread(fileno(f), buf.data(), buf.size(), off);
    if (got > 0) h = fnv1a64(buf.data(), static_cast<size_t>(got), h);
  }
  key.hash = h;
  return key;
}

bool isSpace(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// Whether a CR in `line` has more than blanks after it: the line holds several lines ended by CR alone.
bool splitByCr(std::string_view line) {
  const size_t cr = line.find('\r');
  if (cr == std::string_view::npos) return false;
  for (size_t i = cr + 1; i < line.size(); ++i) {
    if (!isSpace(static_cast<unsigned char>(line[i]))) return true;
  }
  return false;
}

// A compressed file read as text fails on its first bytes as "control character 0x1f": say what it is.
void refuseCompressed(const std::string& path, std::string_view first_line) {
  const auto starts = [&](std::string_view magic, size_t at = 0) { return first_line.substr(at, magic.size()) == magic; };
  std::string_view name, tool;
  if (starts("\x1f\x8b")) name = "gzip", tool = "gunzip";
  else if (starts("\x28\xb5\x2f\xfd")) name = "zstd", tool = "unzstd";
  else if (starts("\xfd" "7zXZ")) name = "xz", tool = "unxz";
  else if (starts("BZh") && starts("1AY&SY", 4)) name = "bzip2", tool = "bunzip2";  // "BZh" could be an item
  if (!name.empty()) {
    RT_THROW(DataError, path, ":1: the file is ", name, "-compressed; give the corpus uncompressed (", tool,
             " it first)");
  }
}

// A space other than ASCII's (no-break, en to hair, ideographic, ...): Python's split() separates items at
// these, ringtrain (as word2vec) only at ASCII space and tab, so such a token is said aloud.
// So is a character that shows as nothing (zero-width space and joiners, word joiner, and U+FEFF, a byte
// order mark in the middle of a file made by joining two files that start with one): "36" and "<U+FEFF>36"
// would be two items that print alike.
bool isUnicodeSpace(uint32_t cp) {
  return cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200d) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x2060 || cp == 0x3000 || cp == 0xfeff;
}

// Returns "" when `t` is valid UTF-8 without control characters, otherwise what is wrong. `space` gets the
// first Unicode space in it, or 0.
std::string checkToken(std::string_view t, uint32_t& space) {
  space = 0;
  for (size_t i = 0; i < t.size();) {
    uint32_t cp = 0;
    const size_t at = i;  // nextCodePoint moves past a lead byte whose sequence breaks off
    switch (::ringtrain::detail::nextCodePoint(t, i, cp)) {
      case ::ringtrain::detail::Utf8Error::kNone: break;
      case ::ringtrain::detail::Utf8Error::kBadByte:
        // Latin-1 and other 8-bit encodings fail here, on their first letter beyond ASCII.
        return fmt::format("invalid UTF-8 byte 0x{:02x} (text in Latin-1 or another 8-bit encoding? iconv -f "
                           "latin1 -t utf-8 converts it)", static_cast<unsigned char>(t[at]));
      case ::ringtrain::detail::Utf8Error::kTruncated: return "truncated UTF-8 sequence";
      case ::ringtrain::detail::Utf8Error::kBadSequence: return "invalid UTF-8 sequence";
    }
    if (cp < 0x20 || cp == 0x7f) return fmt::format("control character 0x{:02x}", cp);
    if (cp >= 0x80 && cp < 0xa0) return fmt::format("control character U+{:04X}", cp);
    if (space == 0 && isUnicodeSpace(cp)) space = cp;
  }
  return "";
}

void warnUnicodeSpaces(const std::string& corpus, int64_t tokens, const std::string& first) {
  warn("{}: {} token(s) read hold a Unicode space or invisible character ({}), which is part of the item here: "
       "only ASCII whitespace (space, tab, vertical tab, form feed) separates items; replace it (for U+00A0: "
       "sed 's/\\xc2\\xa0/ /g'; for U+FEFF, a byte order mark inside the file: sed 's/\\xef\\xbb\\xbf//g') if it "
       "was meant to separate, or is not meant at all",
       corpus, tokens, first);
}

// Interns tokens: open addressing over int32 ids; keys in one arena.
class TokenTable {
 public:
  TokenTable() : slots_(1 << 16, -1) {}

  int32_t intern(std::string_view t) {
    const uint64_t h = fnv1a64(t.data(), t.size());
    size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    while (true) {
      const int32_t id = slots_[i];
      if (id < 0) break;
      if (hashes_[id] == h && key(id) == t) return id;
      i = (i + 1) & mask;
    }
    RT_CHECK(counts_.size() < (size_t{1} << 31) - 1, "more than 2^31 distinct tokens");
    const auto id = static_cast<int32_t>(counts_.size());
    arena_.append(t.data(), t.size());
    offsets_.push_back(static_cast<int64_t>(arena_.size()));
    hashes_.push_back(h);
    counts_.push_back(0);
    slots_[i] = id;
    if (counts_.size() * 2 > slots_.size()) grow();
    return id;
  }
  void count(int32_t id) { ++counts_[id]; }

  std::string_view key(int32_t id) const {
    return std::string_view(arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  size_t size() const { return counts_.size(); }
  const std::vector<int64_t>& counts() const { return counts_; }
  void releaseIndex() {
    std::vector<int32_t>().swap(slots_);
    std::vector<uint64_t>().swap(hashes_);
  }

 private:
  void grow() {
    std::vector<int32_t> bigger(slots_.size() * 2, -1);
    const size_t mask = bigger.size() - 1;
    for (size_t id = 0; id < counts_.size(); ++id) {
      size_t i = hashes_[id] & mask;
      while (bigger[i] >= 0) i = (i + 1) & mask;
      bigger[i] = static_cast<int32_t>(id);
    }
    slots_.swap(bigger);
  }

  std::vector<int32_t> slots_;
  std::vector<uint64_t> hashes_;
  std::string arena_;
  std::vector<int64_t> offsets_{0};
  std::vector<int64_t> counts_;
};

template <typename T>
void writeVec(std::FILE* f, const std::vector<T>& v, bool& ok) {
  const uint64_t n = v.size();
  ok = ok && std::fwrite(&n, sizeof n, 1, f) == 1;
  if (n) ok = ok && std::fwrite(v.data(), sizeof(T), n, f) == n;
}
template <typename T>
void writeVal(std::FILE* f, const T& v, bool& ok) {
  ok = ok && std::fwrite(&v, sizeof v, 1, f) == 1;
}
template <typename T>
bool readVal(std::FILE* f, T& v) {
  return std::fread(&v, sizeof v, 1, f) == 1;
}
template <typename T>
bool readVec(std::FILE* f, std::vector<T>& v, uint64_t max_elems) {
  uint64_t n = 0;
  if (!readVal(f, n) || n > max_elems) return false;
  v.resize(n);
  return n == 0 || std::fread(v.data(), sizeof(T), n, f) == n;
}

struct CacheHeader {
  SourceKey key;
  int64_t min_count = 0;
  int64_t skip_bad_lines = 0;
  int64_t max_line_bytes = 0;
  bool operator==(const CacheHeader& o) const {
    return key.size == o.key.size && key.mtime_ns == o.key.mtime_ns && key.ctime_ns == o.key.ctime_ns &&
           key.inode == o.key.inode && key.hash == o.key.hash &&
           min_count == o.min_count && skip_bad_lines == o.skip_bad_lines && max_line_bytes == o.max_line_bytes;
  }
};

void writeHeader(std::FILE* f, const CacheHeader& h, bool& ok) {
  ok = ok && std::fwrite(kCacheMagic, 1, sizeof kCacheMagic, f) == sizeof kCacheMagic;
  writeVal(f, kCacheVersion, ok);
  writeVal(f, h.key.size, ok);
  writeVal(f, h.key.mtime_ns, ok);
  writeVal(f, h.key.ctime_ns, ok);
  writeVal(f, h.key.inode, ok);
  writeVal(f, h.key.hash, ok);
  writeVal(f, h.min_count, ok);
  writeVal(f, h.skip_bad_lines, ok);
  writeVal(f, h.max_line_bytes, ok);
}

bool readHeader(std::FILE* f, CacheHeader& h) {
  char magic[sizeof kCacheMagic];
  uint64_t version = 0;
  return std::fread(magic, 1, sizeof magic, f) == sizeof magic &&
         std::memcmp(magic, kCacheMagic, sizeof magic) == 0 && readVal(f, version) && version == kCacheVersion &&
         readVal(f, h.key.size) && readVal(f, h.key.mtime_ns) && readVal(f, h.key.ctime_ns) &&
         readVal(f, h.key.inode) && readVal(f, h.key.hash) && readVal(f, h.min_count) &&
         readVal(f, h.skip_bad_lines) && readVal(f, h.max_line_bytes);
}

}  // namespace

CorpusLoadOptions CorpusLoadOptions::from(const config::DataOptions& data) {
  CorpusLoadOptions o;
  o.corpus = data.corpus;
  o.items = data.items;
  o.min_count = data.min_count;
  o.skip_bad_lines = data.skip_bad_lines;
  o.cache = data.cache;
  return o;
}

class CorpusBuilder {
 public:
  // Parses the text file into `c`.
  static void parse(Corpus& c, const CorpusLoadOptions& o, std::FILE* f);
  // Renumbers by count, filters min_count and short lines; fills vocab and stats.
  static void finish(Corpus& c, TokenTable& table, int min_count);
  static bool readCache(Corpus& c, const std::string& path, const CacheHeader& expect);
  static void writeCache(const Corpus& c, const std::string& path, const CacheHeader& header);
  static void loadItems(Corpus& c, const CorpusLoadOptions& o);
};

bool directoryWritable(const std::string& file);

void CorpusBuilder::parse(Corpus& c, const CorpusLoadOptions& o, std::FILE* f) {
  TokenTable table;
  // Grows (up to max_line_bytes + 2) only when one line does not fit.
  const size_t max_buf = static_cast<size_t>(o.max_line_bytes) + 2;
  std::vector<char> buf(std::min(kReadChunk, max_buf));
  size_t begin = 0, end = 0;  // unconsumed bytes are buf[begin, end)
  bool eof = false;
  int64_t line_no = 0;
  std::string first_bad;
  std::string first_spaced;  // where the first token holding a Unicode space is
  std::vector<std::string_view> toks;
  c.tokens_.clear();
  c.offsets_.assign(1, 0);

  auto bad = [&](const std::string& why) {
    const std::string msg = fmt::format("{}:{}: {}", o.corpus, line_no, why);
    if (!o.skip_bad_lines) throw DataError(msg + " (set data.skip_bad_lines to skip such lines)");
    if (c.stats_.bad_lines++ == 0) first_bad = msg;
  };
  auto refill = [&]() {
    if (begin > 0) {
      std::memmove(buf.data(), buf.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (end == buf.size()) buf.resize(std::min(buf.size() * 2, max_buf));
    const size_t got = std::fread(buf.data() + end, 1, buf.size() - end, f);
    if (got == 0) {
      if (std::ferror(f)) RT_THROW(DataError, o.corpus, ":", line_no + 1, ": read error: ", errnoText());
      eof = true;
    }
    end += got;
  };

  while (true) {
    char* nl = static_cast<char*>(std::memchr(buf.data() + begin, '\n', end - begin));
    if (!nl && !eof && end - begin <= static_cast<size_t>(o.max_line_bytes)) {
      refill();
      continue;
    }
    if (begin == end && eof) break;
    ++line_no;
    size_t len = nl ? static_cast<size_t>(nl - (buf.data() + begin)) : end - begin;
    if (len > static_cast<size_t>(o.max_line_bytes)) {
      const bool crs = std::memchr(buf.data() + begin, '\r', len) != nullptr;
      bad(fmt::format("line longer than {} bytes{}", o.max_line_bytes,
                      crs ? " (it holds CRs: do its lines end in CR alone? convert them: tr '\\r' '\\n')" : ""));
      // Skip the rest of the overlong line.
      while (!nl) {
        begin = end;
        refill();
        if (eof && begin == end) break;
        nl = static_cast<char*>(std::memchr(buf.data() + begin, '\n', end - begin));
      }
      begin = nl ? static_cast<size_t>(nl - buf.data()) + 1 : end;
      continue;
    }
    std::string_view lineText(buf.data() + begin, len);
    begin = nl ? begin + len + 1 : end;
    // A UTF-8 byte order mark (some editors write one) is not part of the first item's token.
    if (line_no == 1) lineText = ::ringtrain::detail::withoutByteOrderMark(lineText);
    if (line_no == 1) refuseCompressed(o.corpus, lineText);
    // A CR ends a line only as part of CRLF. Lines ended by CR alone (classic Mac; or a part of the file
    // appended from such a source) read as one session, every window crossing sessions.
    if (splitByCr(lineText)) {
      if (line_no == 1 && !nl && eof) {
        RT_THROW(DataError, o.corpus, ":1: lines end in CR alone, so the file would be one session; convert them ",
                 "(tr '\\r' '\\n')");
      }
      bad("a CR inside the line: lines that end in CR alone would read as one session; convert them (tr '\\r' "
          "'\\n')");
      continue;
    }

    toks.clear();
    size_t i = 0;
    std::string why;
    int64_t spaced = 0;
    uint32_t space = 0;
    while (i < lineText.size()) {
      while (i < lineText.size() && isSpace(static_cast<unsigned char>(lineText[i]))) ++i;
      size_t j = i;
      while (j < lineText.size() && !isSpace(static_cast<unsigned char>(lineText[j]))) ++j;
      if (j > i) {
        std::string_view t = lineText.substr(i, j - i);
        why = checkToken(t, space);
        if (!why.empty()) {
          why = fmt::format("token {} is not valid text: {}", toks.size() + 1, why);
          break;
        }
        if (space != 0 && spaced++ == 0 && c.stats_.unicode_space_tokens == 0) {
          first_spaced = fmt::format("line {}, token {}: U+{:04X}", line_no, toks.size() + 1, space);
        }
        toks.push_back(t);
      }
      i = j;
    }
    if (!why.empty()) {
      bad(why);
      continue;
    }
    c.stats_.unicode_space_tokens += spaced;
    for (std::string_view t : toks) {
      const int32_t id = table.intern(t);
      table.count(id);
      c.tokens_.push_back(id);
    }
    c.offsets_.push_back(static_cast<int64_t>(c.tokens_.size()));
  }
  c.stats_.source_lines = line_no;
  if (c.stats_.bad_lines > 0) {
    warn("{}: skipped {} bad line(s); first: {}", o.corpus, c.stats_.bad_lines, first_bad);
  }
  if (c.stats_.unicode_space_tokens > 0) warnUnicodeSpaces(o.corpus, c.stats_.unicode_space_tokens, first_spaced);
  if (line_no == 0) RT_THROW(DataError, o.corpus, ": empty corpus (no lines)");
  finish(c, table, o.min_count);
  if (c.numLines() == 0) {
    RT_THROW(DataError, o.corpus, ": no usable lines: ", line_no, " read, ", c.stats_.bad_lines, " bad, ",
             c.stats_.short_lines, " with fewer than 2 items after min_count ", o.min_count);
  }
}

void CorpusBuilder::finish(Corpus& c, TokenTable& table, int min_count) {
  table.releaseIndex();
  const std::vector<int64_t>& counts = table.counts();
  std::vector<int32_t> order;
  order.reserve(table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    if (counts[i] >= min_count) order.push_back(static_cast<int32_t>(i));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    if (counts[a] != counts[b]) return counts[a] > counts[b];
    return table.key(a) < table.key(b);
  });
  std::vector<int32_t> remap(table.size(), -1);
  std::string arena;
  std::vector<int64_t> offsets{0};
  offsets.reserve(order.size() + 1);
  for (size_t k = 0; k < order.size(); ++k) {
    remap[order[k]] = static_cast<int32_t>(k);
    arena.append(table.key(order[k]));
    offsets.push_back(static_cast<int64_t>(arena.size()));
  }
  // Counts are occurrences in the file (lines dropped later as too short included), so ids stay sorted by
  // count; training uses the counts of its own lines (trainCounts in split.h).
  std::vector<int64_t> new_counts(order.size(), 0);
  for (size_t k = 0; k < order.size(); ++k) new_counts[k] = counts[order[k]];

  // Compact in place: the write position never passes the read position.
  int64_t w = 0;
  size_t kept_lines = 0;
  int64_t dropped = 0, short_lines = 0;
  const size_t nlines = c.offsets_.size() - 1;
  int64_t read_begin = c.offsets_[0];
  for (size_t l = 0; l < nlines; ++l) {
    const int64_t read_end = c.offsets_[l + 1];
    const int64_t line_start = w;
    for (int64_t r = read_begin; r < read_end; ++r) {
      const int32_t id = remap[c.tokens_[r]];
      if (id < 0) {
        ++dropped;
        continue;
      }
      c.tokens_[w++] = id;
    }
    read_begin = read_end;
    if (w - line_start < 2) {
      w = line_start;
      ++short_lines;
      continue;
    }
    c.offsets_[++kept_lines] = w;
  }
  c.offsets_.resize(kept_lines + 1);
  c.offsets_.shrink_to_fit();
  c.tokens_.resize(static_cast<size_t>(w));
  c.tokens_.shrink_to_fit();
  c.stats_.dropped_tokens = dropped;
  c.stats_.short_lines = short_lines;
  c.stats_.lines = static_cast<int64_t>(kept_lines);
  c.stats_.tokens = w;
  c.vocab_ = Vocabulary(std::move(arena), std::move(offsets), std::move(new_counts));
}

bool CorpusBuilder::readCache(Corpus& c, const std::string& path, const CacheHeader& expect) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f.f) return false;
  CacheHeader h;
  if (!readHeader(f.f, h) || !(h == expect)) return false;
  std::string arena;
  std::vector<int64_t> voffsets, counts, stats(5);
  std::vector<char> arena_bytes;
  const uint64_t kMax = uint64_t{1} << 40;
  // The header is this source's: a payload that then breaks off was cut short (a full disk, a copy or a
  // truncate), which is said as a changed checksum is.
  const auto cut = [&] {
    warn("{}: the corpus cache ends before its end marker (cut short: a full disk, a truncated copy?); the corpus "
         "is parsed again", path);
    return false;
  };
  if (!readVec(f.f, stats, 16) || stats.size() != 5) return cut();
  if (!readVec(f.f, arena_bytes, kMax) || !readVec(f.f, voffsets, kMax) || !readVec(f.f, counts, kMax) ||
      !readVec(f.f, c.offsets_, kMax) || !readVec(f.f, c.tokens_, kMax)) {
    return cut();
  }
  uint64_t checksum = 0;
  char trailer[sizeof kCacheMagic];
  if (!readVal(f.f, checksum) || std::fread(trailer, 1, sizeof trailer, f.f) != sizeof trailer ||
      std::memcmp(trailer, kCacheMagic, sizeof trailer) != 0) {
    return cut();
  }
  if (checksum != payloadChecksum(stats, arena_bytes, voffsets, counts, c.offsets_, c.tokens_)) {
    warn("{}: the corpus cache's bytes changed since it was written (checksum); the corpus is parsed again", path);
    return false;
  }
  // Cheap structural checks: a corrupt cache is re-parsed, never trusted.
  const auto n = static_cast<int64_t>(counts.size());
  if (voffsets.size() != counts.size() + 1 || voffsets.front() != 0 ||
      voffsets.back() != static_cast<int64_t>(arena_bytes.size()) || c.offsets_.empty() || c.offsets_.front() != 0 ||
      c.offsets_.back() != static_cast<int64_t>(c.tokens_.size())) {
    return false;
  }
  for (size_t i = 1; i < voffsets.size(); ++i) {
    if (voffsets[i] < voffsets[i - 1]) return false;
  }
  for (size_t i = 1; i < c.offsets_.size(); ++i) {
    if (c.offsets_[i] < c.offsets_[i - 1]) return false;
  }
  for (int32_t t : c.tokens_) {
    if (t < 0 || t >= n) return false;
  }
  arena.assign(arena_bytes.begin(), arena_bytes.end());
  c.vocab_ = Vocabulary(std::move(arena), std::move(voffsets), std::move(counts));
  c.stats_.source_lines = stats[0];
  c.stats_.dropped_tokens = stats[1];
  c.stats_.short_lines = stats[2];
  c.stats_.bad_lines = stats[3];
  c.stats_.unicode_space_tokens = stats[4];
  c.stats_.lines = c.numLines();
  c.stats_.tokens = c.numTokens();
  return true;
}

// A directory nobody may write (mode bits, honoured even for root, who could write anyway: a read-only
// shared data folder must stay untouched) or that access() refuses.
bool directoryWritable(const std::string& file) {
  std::string dir = std::filesystem::path(file).parent_path().string();
  if (dir.empty()) dir = ".";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return false;
  return (st.st_mode & 0222) != 0 && ::access(dir.c_str(), W_OK) == 0;
}

// <cache>.tmp.<pid>.<random> files of writers that were killed mid-write (tens of MB each for a large
// corpus): removed when their process is gone and they are over an hour old (on a shared file system the pid
// may be another host's, whose writer would be slow, not dead, to take an hour).
static void removeAbandonedTemporaries(const std::string& cache_path) {
  namespace fs = std::filesystem;
  const fs::path target(cache_path);
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid <= 0 || !processGone(static_cast<pid_t>(pid))) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::time(nullptr) - st.st_mtime < 3600) continue;
    std::error_code rm;
    if (fs::remove(it->path(), rm)) info("{}: removed an abandoned corpus cache write", it->path().string());
  }
}

void CorpusBuilder::writeCache(const Corpus& c, const std::string& path, const CacheHeader& header) {
  // Replace only a cache of ours: a user's file, link or directory at <corpus>.rtc is left alone.
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0) {
    bool ours = S_ISREG(existing.st_mode);
    if (ours) {
      File old(std::fopen(path.c_str(), "rb"));
      char magic[sizeof kCacheMagic] = {};
      ours = old.f != nullptr && std::fread(magic, 1, sizeof magic, old.f) == sizeof magic &&
             std::memcmp(magic, kCacheMagic, sizeof magic) == 0;
    }
    if (!ours) {
      warn("{}: exists and is not a ringtrain corpus cache; left alone, continuing without a cache", path);
      return;
    }
  }
  if (!directoryWritable(path)) {
    warn("{}: the directory is not writable; continuing without a corpus cache", path);
    return;
  }
  removeAbandonedTemporaries(path);
  std::random_device rd;
  const std::string tmp = fmt::format("{}.tmp.{}.{:x}", path, ::getpid(), rd());
  File f(std::fopen(tmp.c_str(), "wb"));
  if (!f.f) {
    warn("{}: cannot write the corpus cache ({}); continuing without it", path, errnoText());
    return;
  }
  bool ok = true;
  writeHeader(f.f, header, ok);
  const std::vector<int64_t> stats = {c.stats_.source_lines, c.stats_.dropped_tokens, c.stats_.short_lines,
                                      c.stats_.bad_lines, c.stats_.unicode_space_tokens};
  writeVec(f.f, stats, ok);
  const std::string& arena = c.vocab_.arena();
  const std::vector<char> arena_bytes(arena.begin(), arena.end());
  writeVec(f.f, arena_bytes, ok);
  writeVec(f.f, c.vocab_.offsets(), ok);
  writeVec(f.f, c.vocab_.counts(), ok);
  writeVec(f.f, c.offsets_, ok);
  writeVec(f.f, c.tokens_, ok);
  writeVal(f.f, payloadChecksum(stats, arena_bytes, c.vocab_.offsets(), c.vocab_.counts(), c.offsets_, c.tokens_), ok);
  ok = ok && std::fwrite(kCacheMagic, 1, sizeof kCacheMagic, f.f) == sizeof kCacheMagic;
  ok = (std::fclose(f.f) == 0) && ok;
  f.f = nullptr;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    warn("{}: cannot write the corpus cache ({}); continuing without it", path, errnoText());
    std::remove(tmp.c_str());
  }
}

void CorpusBuilder::loadItems(Corpus& c, const CorpusLoadOptions& o) {
  if (o.items == "none") return;
  std::string items = o.items;
  if (items.empty()) {
    const auto beside = std::filesystem::path(o.corpus).parent_path() / "items.tsv";
    std::error_code ec;
    if (!std::filesystem::exists(beside, ec)) return;
    items = beside.string();
  }
  c.items_ = ItemTable::load(items, c.vocab_);
}

std::shared_ptr<const Corpus> Corpus::load(const CorpusLoadOptions& o) {
  RT_CHECK_T(DataError, !o.corpus.empty(), "no corpus file given (data.corpus)");
  RT_CHECK_T(DataError, o.min_count >= 1, "data.min_count must be >= 1");
  auto c = std::make_shared<Corpus>();
  c->path_ = o.corpus;
  // O_NONBLOCK: a FIFO nobody writes would otherwise hold open() forever, before the check below refuses it.
  const int fd = ::open(o.corpus.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::error_code ec;
    const std::string cwd = std::filesystem::current_path(ec).string();
    RT_THROW(DataError, o.corpus, ": cannot open corpus: ", std::strerror(err),
             err == ENOENT && std::filesystem::path(o.corpus).is_relative() && !ec
                 ? " (a relative path is taken from the working directory, " + cwd + ")"
                 : std::string());
  }
  File f(::fdopen(fd, "rb"));
  if (!f.f) {
    ::close(fd);
    RT_THROW(DataError, o.corpus, ": cannot open corpus: ", errnoText());
  }
  struct stat st {};  // of the file opened: a path checked apart could have changed in between
  if (::fstat(fileno(f.f), &st) != 0) RT_THROW(DataError, o.corpus, ": cannot stat: ", errnoText());
  if (S_ISDIR(st.st_mode)) RT_THROW(DataError, o.corpus, ": is a directory, not a corpus file");
  if (!S_ISREG(st.st_mode)) {
    RT_THROW(DataError, o.corpus, ": is not a regular file (a pipe or device): every rank reads the corpus itself, "
             "and its cache is keyed by the file; write it to a file first");
  }
  ::fcntl(fileno(f.f), F_SETFL, ::fcntl(fileno(f.f), F_GETFL) & ~O_NONBLOCK);  // plain reads from here on
  CacheHeader header;
  header.key = sourceKey(o.corpus, f.f);
  header.min_count = o.min_count;
  header.skip_bad_lines = o.skip_bad_lines ? 1 : 0;
  header.max_line_bytes = o.max_line_bytes;
  if (header.key.size == 0) RT_THROW(DataError, o.corpus, ":1: empty corpus (the file has no bytes)");
  const std::string cache_path = o.corpus + ".rtc";
  bool cached = false;
  if (o.cache) {
    cached = CorpusBuilder::readCache(*c, cache_path, header);
    if (cached) {
      c->stats_.from_cache = true;
      debug("{}: read from cache {}", o.corpus, cache_path);
      if (c->stats_.bad_lines > 0) {
        warn("{}: skipped {} bad line(s) (counted when the cache {} was built; data.cache: false names the first)",
             o.corpus, c->stats_.bad_lines, cache_path);
      }
      if (c->stats_.unicode_space_tokens > 0) {
        warnUnicodeSpaces(o.corpus, c->stats_.unicode_space_tokens,
                          "counted when the cache " + cache_path + " was built; data.cache: false names the first");
      }
    }
  }
  if (!cached) {
    CorpusBuilder::parse(*c, o, f.f);
    if (o.cache) CorpusBuilder::writeCache(*c, cache_path, header);
  }
  if (o.cache) {
    std::error_code exists_ec;
    if (std::filesystem::is_regular_file(cache_path, exists_ec)) c->stats_.cache_path = cache_path;
  }
  CorpusBuilder::loadItems(*c, o);
  return c;
}

std::shared_ptr<const Corpus> Corpus::fromLines(const std::vector<std::vector<std::string>>& lines, int min_count) {
  auto c = std::make_shared<Corpus>();
  c->path_ = "<memory>";
  TokenTable table;
  int64_t line_no = 0;
  for (const auto& line : lines) {
    ++line_no;
    for (const auto& t : line) {
      uint32_t space = 0;
      const std::string why = checkToken(t, space);
      if (!why.empty() || t.empty()) RT_THROW(DataError, "<memory>:", line_no, ": bad token '", t, "': ", why);
      if (space != 0) ++c->stats_.unicode_space_tokens;  // counted, not warned: the caller chose the tokens
      const int32_t id = table.intern(t);
      table.count(id);
      c->tokens_.push_back(id);
    }
    c->offsets_.push_back(static_cast<int64_t>(c->tokens_.size()));
  }
  c->stats_.source_lines = line_no;
  CorpusBuilder::finish(*c, table, min_count);
  return c;
}

}  // namespace ringtrain::data
