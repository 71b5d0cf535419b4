#include "ringtrain/data/synthetic.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "ringtrain/core/error.h"
#include "ringtrain/core/file_target.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/alias_sampler.h"
#include "ringtrain/data/corpus.h"
#include "ringtrain/data/random.h"

namespace ringtrain::data {
namespace {

constexpr size_t kFlushBytes = 8 << 20;

// An atomic write (AtomicFile) of text built in buf(), written out in pieces of about kFlushBytes.
class AtomicWriter {
 public:
  // Through a link to its target (file_target.h), as every file ringtrain writes.
  AtomicWriter(const std::string& path, const std::string& what) : file_(atomicWriteTarget(path), what) {
    buf_.reserve(kFlushBytes + 4096);
  }
  std::string& buf() { return buf_; }
  void maybeFlush() {
    if (buf_.size() >= kFlushBytes) flush();
  }
  void commit() {
    flush();
    file_.commit();
  }

 private:
  void flush() {
    file_.write(buf_);
    buf_.clear();
  }
  AtomicFile file_;
  std::string buf_;
};

void appendInt(std::string& s, int64_t v) {
  char tmp[24];
  auto [p, ec] = std::to_chars(tmp, tmp + sizeof tmp, v);
  s.append(tmp, p);
}

// The first lines gen-data writes to items.tsv: the header, then item 0 of category 0.
constexpr std::string_view kGeneratedItemsStart = "id\tkey\tname\tcategory\n0\t0\titem 0\tc0\n";

// Whether `path` begins as an items.tsv that gen-data wrote (only such a file is gen-data's to remove).
bool generatedItemsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string start(kGeneratedItemsStart.size(), '\0');
  in.read(start.data(), static_cast<std::streamsize>(start.size()));
  return in && start == kGeneratedItemsStart;
}

// What a generated directory's synthetic.stamp holds: the options and seed its files were made from.
std::string syntheticStamp(const config::SyntheticOptions& s, int64_t seed) {
  return fmt::format("items={} categories={} sessions={} session_length={} alpha={} zipf={} seed={}\n", s.items,
                     s.categories, s.sessions, s.session_length, s.alpha, s.zipf, seed);
}

std::string stampPath(const std::string& dir) { return (std::filesystem::path(dir) / "synthetic.stamp").string(); }

}  // namespace

SyntheticResult generateSynthetic(const config::SyntheticOptions& o, int64_t seed, const std::string& dir,
                                  bool write_items) {
  RT_CHECK_T(ConfigError, o.items >= 2, "synthetic.items must be >= 2");
  RT_CHECK_T(ConfigError, o.categories >= 1 && o.categories <= o.items, "synthetic.categories (gen-data --categories) ",
             o.categories, " must be in [1, synthetic.items = ", o.items, "]");
  RT_CHECK_T(ConfigError, o.session_length >= 2, "synthetic.session_length must be >= 2");
  RT_CHECK_T(ConfigError, o.alpha >= 0 && o.alpha <= 1, "synthetic.alpha must be in [0, 1]");
  if (dir.empty()) RT_THROW(ConfigError, "no output directory given for the synthetic corpus (gen-data --out)");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) RT_THROW(DataError, dir, ": cannot create directory: ", ec.message());
  // Checked before sequences.txt is replaced: a run refused later would leave a corpus without its items.
  const std::string items_path = (std::filesystem::path(dir) / "items.tsv").string();
  const auto items_status = std::filesystem::status(items_path, ec);  // a link is written through
  if (std::filesystem::exists(items_status)) {
    if (!std::filesystem::is_regular_file(items_status)) {
      RT_THROW(ConfigError, items_path, " exists and is not a regular file; move it, or choose another --out");
    }
    // An earlier generation's items.tsv is replaced, or with --no-items removed (it would name these items
    // with its own categories); a file gen-data did not write is somebody's: refused, kept as it is.
    if (!generatedItemsFile(items_path)) {
      RT_THROW(ConfigError, items_path, " is not an items.tsv that gen-data wrote: ",
               write_items ? "gen-data would replace it" : "with --no-items its names and categories would be taken "
                                                           "for the new items",
               "; move it, or choose another --out");
    }
  }
  // So is a sequences.txt, or what a link of that name leads to: it is gen-data's only beside a stamp or an
  // items.tsv that gen-data wrote (a generation with --no-items leaves the stamp).
  const std::string sequences_path = (std::filesystem::path(dir) / "sequences.txt").string();
  const auto sequences_status = std::filesystem::symlink_status(sequences_path, ec);
  const bool stamped = std::filesystem::exists(stampPath(dir), ec);
  if (std::filesystem::exists(sequences_status) && !stamped &&
      !(std::filesystem::exists(items_status) && generatedItemsFile(items_path))) {
    RT_THROW(ConfigError, sequences_path, " is not a corpus that gen-data wrote (no synthetic.stamp or gen-data "
             "items.tsv beside it): gen-data would replace it; move it, or choose another --out");
  }
  // A link is written through: the stamp that vouches for what it leads to is the one beside that file, not
  // the one beside the link (a link put in a generated directory may lead to anybody's file).
  if (std::filesystem::is_symlink(sequences_status)) {
    const std::filesystem::path target = std::filesystem::weakly_canonical(sequences_path, ec);
    const std::string target_dir = target.parent_path().string();
    if (!ec && !std::filesystem::equivalent(target_dir, dir, ec) && std::filesystem::exists(target, ec) &&
        !std::filesystem::exists(stampPath(target_dir), ec)) {
      RT_THROW(ConfigError, sequences_path, " is a link to ", target.string(), ", which has no synthetic.stamp "
               "beside it: gen-data would write its corpus over that file; move the link, or choose another --out");
    }
  }
  // Until the new files are whole, the directory holds no generation of any options: a generation cut off
  // midway is made again, not taken for the stamp's.
  std::filesystem::remove(stampPath(dir), ec);

  const int64_t n = o.items;
  const int k = o.categories;
  const int64_t per_category = (n + k - 1) / k;
  std::vector<double> weights(static_cast<size_t>(per_category));
  for (int64_t r = 0; r < per_category; ++r) weights[r] = std::pow(static_cast<double>(r + 1), -o.zipf);
  const AliasSampler zipf(weights);
  std::vector<double>().swap(weights);

  SyntheticResult result;
  result.sequences_path = sequences_path;
  result.items_path = items_path;

  Xoshiro256 rng(mixSeed({static_cast<uint64_t>(seed), 0x73796e7468ULL}));
  const int64_t min_len = std::max(2, o.session_length / 2);
  const int64_t max_len = std::max<int64_t>(min_len, o.session_length + o.session_length / 2);
  auto draw = [&](int64_t category) {
    while (true) {
      const int64_t item = static_cast<int64_t>(zipf.sample(rng)) * k + category;
      if (item < n) return item;
    }
  };
  {
    AtomicWriter out(result.sequences_path, "synthetic corpus");
    std::string& buf = out.buf();
    for (int64_t s = 0; s < o.sessions; ++s) {
      const auto home = static_cast<int64_t>(rng.below(static_cast<uint64_t>(k)));
      const int64_t len = min_len + static_cast<int64_t>(rng.below(static_cast<uint64_t>(max_len - min_len + 1)));
      int64_t prev = -1;
      for (int64_t i = 0; i < len; ++i) {
        const auto pick = [&] {
          const int64_t c = rng.uniform() < o.alpha ? home : static_cast<int64_t>(rng.below(static_cast<uint64_t>(k)));
          return draw(c);
        };
        int64_t item = pick();
        if (item == prev) item = pick();
        if (i) buf.push_back(' ');
        appendInt(buf, item);
        prev = item;
      }
      buf.push_back('\n');
      result.tokens += len;
      out.maybeFlush();
    }
    out.commit();
  }
  result.sessions = o.sessions;
  if (!write_items) {
    // An items.tsv of an earlier generation would name these items with its own categories.
    std::error_code ec;
    if (std::filesystem::remove(result.items_path, ec)) {
      warn("{}: removed the items.tsv of an earlier generation (--no-items: its categories would be taken for "
           "these items)", result.items_path);
    }
  } else {
    AtomicWriter out(result.items_path, "synthetic items");
    std::string& buf = out.buf();
    buf.append("id\tkey\tname\tcategory\n");
    for (int64_t item = 0; item < n; ++item) {
      appendInt(buf, item);
      buf.push_back('\t');
      appendInt(buf, item);
      buf.append("\titem ");
      appendInt(buf, item);
      buf.append("\tc");
      appendInt(buf, plantedCategory(item, k));
      buf.push_back('\n');
      out.maybeFlush();
    }
    out.commit();
  }
  AtomicWriter stamp(stampPath(dir), "synthetic corpus stamp");
  stamp.buf() = syntheticStamp(o, seed);
  stamp.commit();
  return result;
}

std::shared_ptr<const Corpus> loadJobCorpus(const config::JobConfig& job) {
  if (!job.data.corpus.empty()) return Corpus::load(job.data);
  // Generated once per (synthetic options, seed): a stamp beside the files records what they hold.
  const config::SyntheticOptions& s = job.synthetic;
  const std::string dir = (std::filesystem::path(job.run.output_dir) / "data").string();
  const std::string stamp = syntheticStamp(s, job.run.seed);
  std::string existing;
  {
    std::ifstream in(stampPath(dir));
    std::stringstream ss;
    ss << in.rdbuf();
    existing = ss.str();
  }
  if (existing != stamp) {
    info("generating the synthetic corpus in {} ({} items, {} categories, {} sessions)", dir, s.items,
         s.categories, s.sessions);
    generateSynthetic(s, job.run.seed, dir);  // stamps the directory once its files are whole
  }
  CorpusLoadOptions o = CorpusLoadOptions::from(job.data);
  o.corpus = jobCorpusPath(job);
  return Corpus::load(o);
}

std::string jobCorpusPath(const config::JobConfig& job) {
  if (!job.data.corpus.empty()) return job.data.corpus;
  return (std::filesystem::path(job.run.output_dir) / "data" / "sequences.txt").string();
}

std::string jobItemsPath(const config::JobConfig& job) {
  if (job.data.items == "none") return "";
  if (!job.data.items.empty()) return job.data.items;
  return (std::filesystem::path(jobCorpusPath(job)).parent_path() / "items.tsv").string();
}

}  // namespace ringtrain::data
