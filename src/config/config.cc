#include "ringtrain/config/config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "config/schema.h"
#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/hash.h"
#include "ringtrain/core/logging.h"

namespace ringtrain::config {
namespace {

// The job's identity (hash(), checkpoints) names what training computes. Keys that say how this invocation
// runs it (resume or not, fault injection, how sparse rows travel: every ddp.sparse_sync mode sums the same
// rows in the same rank order, with or without ddp.overlap_sparse), how it is evaluated, logged and served
// are left out, so a resumed run recognises its own checkpoints. (Evaluation draws from its own seeded
// generators, not training's.)
bool inIdentity(const Field& f) {
  if (f.section == "eval" || f.section == "log" || f.section == "serve") return false;
  // Where files go, how often checkpoints are kept, how the loader prefetches (its batches are the same
  // with any number of workers: tested), how ranks meet, whether bytes between ranks on one host go
  // through the backend or straight from a peer's memory (the same bytes, summed the same way), whether the
  // corpus is parsed or read from its cache, how often replicas are compared, how long waits poll, which
  // rank trains which pairs of a step (ddp.balance, ddp.steal: the same pairs, their sums in another order), whether
  // settings that are not bit for bit are refused (run.deterministic), which CPUs its threads run on, and
  // the run's label: none changes what training computes, and a run directory moved or copied elsewhere
  // must still resume.
  static const std::set<std::string> kHowToRun = {
      "checkpoint.resume",  "checkpoint.dir",     "checkpoint.every_steps", "checkpoint.keep",
      "run.crash_at_step",  "run.output_dir",     "run.name",               "data.cache",
      "ddp.sparse_sync",    "ddp.overlap_sparse", "ddp.replica_check_every", "loader.workers",
      "loader.queue_depth", "loader.pin_memory",  "comm.timeout_s",         "comm.master_addr",
      "comm.master_port",   "comm.check_collectives", "comm.same_host_copy",  "comm.spin_us",
      "ddp.balance",        "ddp.steal",          "ddp.steal_min_pairs",     "run.deterministic",
      "run.pin_threads",    "run.huge_pages"};
  return kHowToRun.count(f.path()) == 0;
}

void resetToDefault(JobConfig& config, const Field& f) {
  static const JobConfig defaults;
  f.assign(config, f.print(defaults));
}

std::vector<std::string> keysOf(const std::string& section) {
  std::vector<std::string> keys;
  for (const Field& f : schema()) {
    if (f.section == section) keys.push_back(f.key);
  }
  return keys;
}

std::string suggestion(const std::string& closest) {
  return closest.empty() ? "" : " (did you mean '" + closest + "'?)";
}

// Where a problem is: "file:line" for YAML input, "--set" for overrides.
std::string located(const std::string& origin, const YAML::Mark& mark) {
  if (mark.is_null()) return origin;
  return fmt::format("{}:{}", origin, mark.line + 1);
}

const Field& fieldOrThrow(const std::string& section, const std::string& key, const std::string& where) {
  if (!isSection(section)) {
    RT_THROW(ConfigError, where, ": unknown section '", section, "'", suggestion(closestMatch(section, sections())));
  }
  const Field* f = findField(section, key);
  if (f == nullptr) {
    std::string hint = suggestion(closestMatch(key, keysOf(section)));
    if (hint.empty()) {
      // A key put in the wrong section is a common slip: say where it belongs.
      for (const Field& other : schema()) {
        if (other.key == key) hint = " (did you mean '" + other.path() + "'?)";
      }
    }
    RT_THROW(ConfigError, where, ": unknown key '", section, ".", key, "'", hint);
  }
  return *f;
}

// Where each key was last set ("job.yaml:12", "--set"): a check across keys runs once all are set, and
// names the line of the key it belongs to.
using SetAt = std::map<std::string, std::string>;

void assignChecked(JobConfig& config, const Field& f, const std::string& text, const std::string& where,
                   SetAt* set_at) {
  if (std::string problem = f.assign(config, text); !problem.empty()) {
    RT_THROW(ConfigError, where, ": ", f.path(), ": ", problem);
  }
  if (std::string problem = f.check(config); !problem.empty()) {
    RT_THROW(ConfigError, where, ": ", f.path(), ": ", problem);
  }
  if (set_at != nullptr) (*set_at)[f.path()] = where;
}

// The field's own check, then its relation to other keys.
std::string problemOf(const Field& f, const JobConfig& config) {
  std::string problem = f.check(config);
  if (problem.empty() && f.relation) problem = f.relation(config);
  return problem;
}

// No setting spans lines, and YAML's ways of letting one do so were slips: a quoted value that does not close
// on its line (YAML runs it on over lines, yaml-cpp to the end of the file: a missing closing quote silently
// swallowed every key after it, which kept their defaults), a plain value continued on the next, more
// indented line (a key whose ':' was lost there: "corpus: a.txt" then "    min_count 5" reads as corpus
// "a.txt min_count 5"), a block scalar (| or >). `mark` is the value's start in `text`, `value` what YAML made
// of it; "" when it stays on its line, else what is wrong.
std::string valueOffItsLine(const std::string& text, const YAML::Mark& mark, const std::string& value) {
  if (mark.is_null() || mark.pos < 0 || static_cast<size_t>(mark.pos) >= text.size()) return "";
  const auto start = static_cast<size_t>(mark.pos);
  const char first = text[start];
  if (first == '"' || first == '\'') {
    for (size_t i = start + 1; i < text.size(); ++i) {
      const char c = text[i];
      if (c == '\n' || c == '\r') break;
      if (first == '"' && c == '\\') {
        ++i;  // an escape: the next character is not the closing quote
      } else if (c == first) {
        if (first == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
          ++i;  // '' inside single quotes is one quote
        } else {
          return "";
        }
      }
    }
    return "the quoted value does not close on its line (a missing closing quote?)";
  }
  if (first == '|' || first == '>') return "a block scalar (| or >) runs over lines; every setting is one line";
  size_t end = text.find_first_of("\r\n", start);
  if (end == std::string::npos) end = text.size();
  // What the line holds of it: up to a comment (a '#' after a blank), without trailing blanks.
  for (size_t i = start + 1; i < end; ++i) {
    if (text[i] == '#' && (text[i - 1] == ' ' || text[i - 1] == '\t')) {
      end = i;
      break;
    }
  }
  while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
  if (value.size() > end - start) {
    return "the value runs on over the next line (a missing ':' there?); every setting is one line";
  }
  return "";
}

// With `ignored` (a configuration another version stored), what this version cannot take is listed there as
// "section.key: value" instead of rejected: keys it does not know, and values it refuses for keys outside
// the job's identity (those keep their defaults). False when the text holds no setting at all (empty, blanks
// and comments, empty documents).
bool applyYaml(JobConfig& config, const std::string& file_text, const std::string& origin,
               std::vector<std::string>* ignored = nullptr, SetAt* set_at = nullptr) {
  // Without its UTF-8 byte order mark (an editor's), which yaml-cpp skips: the marks it gives count from
  // after it, and valueOffItsLine reads the text at them.
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  const std::string text = file_text.compare(0, kBom.size(), kBom) == 0 ? file_text.substr(kBom.size()) : file_text;
  YAML::Node root;
  try {
    // LoadAll: Load would read the first of several documents and drop the rest without a word.
    const std::vector<YAML::Node> documents = YAML::LoadAll(text);
    for (size_t d = 1; d < documents.size(); ++d) {
      if (documents[d].IsNull()) continue;  // a trailing '---' or an empty document
      RT_THROW(ConfigError, located(origin, documents[d].Mark()), ": a second YAML document ('---'); a job's "
               "configuration is one document");
    }
    if (!documents.empty()) root = documents.front();
  } catch (const YAML::ParserException& e) {
    // An error found at the end of the text (an unclosed bracket) has its mark on the line after the last
    // one: name the last line, which is where the file stops short.
    const auto lines = static_cast<int>(std::count(text.begin(), text.end(), '\n') +
                                        (!text.empty() && text.back() != '\n' ? 1 : 0));
    if (!e.mark.is_null() && e.mark.line >= lines && lines > 0) {
      RT_THROW(ConfigError, origin, ":", lines, ": YAML syntax error at the end of the file: ",
               detail::quotable(e.msg, 200));
    }
    RT_THROW(ConfigError, located(origin, e.mark), ": YAML syntax error: ", detail::quotable(e.msg, 200));
  }
  if (root.IsNull()) return false;
  if (!root.IsMap()) {
    RT_THROW(ConfigError, located(origin, root.Mark()), ": expected a mapping of sections (run:, data:, ...)");
  }
  // yaml-cpp keeps duplicate keys, and the later one would silently win: where each section and key was
  // first given, to name both places.
  std::map<std::string, YAML::Mark> first_given;
  auto once = [&](const std::string& what, const std::string& name, const YAML::Mark& mark) {
    const auto [it, fresh] = first_given.emplace(name, mark);
    if (!fresh) {
      RT_THROW(ConfigError, located(origin, mark), ": ", what, " '", name, "' is given twice (first at line ",
               it->second.line + 1, ")");
    }
  };
  // A name written as a list or mapping ("[a]: 2") has no Scalar(): said as what it is, not as a missing name.
  const auto refuseUnnamed = [&](const YAML::Node& name, const std::string& what) {
    if (!name.IsSequence() && !name.IsMap()) return;  // a null name is said as missing, below
    RT_THROW(ConfigError, located(origin, name.Mark()), ": ", what, " named by a ", name.IsSequence() ? "list" : "mapping",
             "; a name is a word (run, data.batch_size)");
  };
  for (const auto& section_entry : root) {
    refuseUnnamed(section_entry.first, "a section");
    const std::string section = section_entry.first.Scalar();
    const YAML::Node& body = section_entry.second;
    const std::string where = located(origin, section_entry.first.Mark());
    if (section.empty()) RT_THROW(ConfigError, where, ": a section without a name ('', '~' or 'null')");
    once("section", section, section_entry.first.Mark());
    if (!isSection(section) && ignored != nullptr) {
      if (body.IsMap()) {
        for (const auto& entry : body) {
          ignored->push_back(section + "." + entry.first.Scalar() + ": " + YAML::Dump(entry.second));
        }
      } else {
        ignored->push_back(section + ": " + YAML::Dump(body));
      }
      continue;
    }
    if (!isSection(section)) {
      RT_THROW(ConfigError, where, ": unknown section '", section, "'", suggestion(closestMatch(section, sections())));
    }
    if (body.IsNull()) continue;
    if (!body.IsMap()) RT_THROW(ConfigError, where, ": ", section, ": expected a mapping of keys");
    for (const auto& entry : body) {
      refuseUnnamed(entry.first, section + ": a key");
      const std::string key = entry.first.Scalar();
      const std::string key_where = located(origin, entry.first.Mark());
      if (key.empty()) RT_THROW(ConfigError, key_where, ": ", section, ": a key without a name ('', '~' or 'null')");
      once("key", section + "." + key, entry.first.Mark());
      if (ignored != nullptr && findField(section, key) == nullptr) {
        ignored->push_back(section + "." + key + ": " + YAML::Dump(entry.second));
        continue;
      }
      const Field& f = fieldOrThrow(section, key, key_where);
      const YAML::Node& value = entry.second;
      // A single value; an empty string may be written as nothing at all.
      const bool single = value.IsScalar() || (value.IsNull() && f.type == FieldType::kString);
      const std::string value_text = value.IsScalar() ? value.Scalar() : "";
      if (ignored != nullptr && !inIdentity(f)) {
        const std::string problem = single ? f.assign(config, value_text) : "expected a single value";
        if (!problem.empty()) {
          ignored->push_back(f.path() + ": " + YAML::Dump(value) + " (" + problem + ")");
          resetToDefault(config, f);
        }
        continue;
      }
      if (!single) {
        RT_THROW(ConfigError, key_where, ": ", f.path(), ": expected a single value, got a ",
                 value.IsNull() ? "null" : value.IsMap() ? "mapping" : "list");
      }
      if (const std::string off = valueOffItsLine(text, value.Mark(), value_text); !off.empty()) {
        RT_THROW(ConfigError, located(origin, value.Mark()), ": ", f.path(), ": ", off);
      }
      assignChecked(config, f, value_text, key_where, set_at);
    }
  }
  return true;
}

void setValueAt(JobConfig& config, const std::string& key, const std::string& value, const std::string& origin,
                SetAt* set_at) {
  const size_t dot = key.find('.');
  if (dot == std::string::npos) RT_THROW(ConfigError, origin, " ", key, ": expected section.key");
  const Field& f = fieldOrThrow(key.substr(0, dot), key.substr(dot + 1), origin);
  assignChecked(config, f, value, origin, set_at);
}

void applyOverrides(JobConfig& config, const std::vector<Override>& overrides, SetAt* set_at) {
  // In order: a key given twice takes the later value, so that a script's defaults can be overridden by
  // the arguments it passes on after them.
  for (const Override& o : overrides) setValueAt(config, o.key, o.value, o.origin, set_at);
}

void validateAt(const JobConfig& config, const SetAt& set_at) {
  for (const Field& f : schema()) {
    if (std::string problem = problemOf(f, config); !problem.empty()) {
      const auto where = set_at.find(f.path());
      if (where == set_at.end()) RT_THROW(ConfigError, f.path(), ": ", problem);
      RT_THROW(ConfigError, where->second, ": ", f.path(), ": ", problem);
    }
  }
}

std::string yamlQuoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  return out + "\"";
}

// loadString, saying whether the text set anything (`sets_nothing`), for loadFile's warning.
JobConfig loadText(const std::string& yaml, const std::string& origin, const std::vector<Override>& overrides,
                   bool& sets_nothing) {
  JobConfig config;
  SetAt set_at;
  sets_nothing = !applyYaml(config, yaml, origin, nullptr, &set_at);
  applyOverrides(config, overrides, &set_at);
  validateAt(config, set_at);
  return config;
}

}  // namespace

Override parseOverride(const std::string& text) {
  const size_t eq = text.find('=');
  const size_t dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq) {
    RT_THROW(ConfigError, "--set '", text, "': expected section.key=value (for example data.window=5)");
  }
  return Override{text.substr(0, eq), text.substr(eq + 1)};
}

void setValue(JobConfig& config, const std::string& key, const std::string& value, const std::string& origin) {
  setValueAt(config, key, value, origin, nullptr);
}

void validate(const JobConfig& config) { validateAt(config, {}); }

JobConfig loadString(const std::string& yaml, const std::string& origin, const std::vector<Override>& overrides) {
  bool sets_nothing = false;
  return loadText(yaml, origin, overrides, sets_nothing);
}

JobConfig loadFile(const std::string& path, const std::vector<Override>& overrides) {
  // An ifstream opens a directory and reads nothing from it: the job would silently be the defaults.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) RT_THROW(ConfigError, path, ": is a directory, not a config file");
  std::ifstream in(path);
  if (!in) RT_THROW(ConfigError, path, ": cannot open config file: ", std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) RT_THROW(ConfigError, path, ": cannot read config file");
  bool sets_nothing = false;
  JobConfig config = loadText(text.str(), path, overrides, sets_nothing);
  // An empty job file (/dev/null, one truncated, comments only) runs every default: said, since a train run
  // then generates the default synthetic job instead of the one meant.
  if (sets_nothing) {
    warn("{}: the job file sets nothing: every setting is its default{}", path,
         overrides.empty() ? "" : ", but for the --set ones");
  }
  return config;
}

JobConfig loadStored(const std::string& yaml, const std::string& origin, std::vector<std::string>* ignored) {
  JobConfig config;
  std::vector<std::string> skipped;
  applyYaml(config, yaml, origin, &skipped);
  for (const Field& f : schema()) {
    std::string problem = problemOf(f, config);
    if (problem.empty()) continue;
    if (inIdentity(f)) RT_THROW(ConfigError, origin, ": ", f.path(), ": ", problem);
    // A how-to-run value this version takes, but not beside the others stored (ddp.balance true with
    // run.deterministic true, refused since): a stored configuration is read for what the job computes,
    // which this does not touch, so it is reset without a word.
    const bool valid_alone = f.check(config).empty();
    if (!valid_alone) skipped.push_back(f.path() + ": " + f.print(config) + " (" + problem + ")");
    resetToDefault(config, f);
  }
  if (ignored != nullptr) *ignored = std::move(skipped);
  return config;
}

JobConfig fromOverrides(const std::vector<Override>& overrides) {
  JobConfig config;
  SetAt set_at;
  applyOverrides(config, overrides, &set_at);
  validateAt(config, set_at);
  return config;
}

std::vector<std::pair<std::string, std::string>> flatten(const JobConfig& config) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Field& f : schema()) out.emplace_back(f.path(), f.print(config));
  return out;
}

std::string toYaml(const JobConfig& config) {
  std::string out;
  std::string current;
  for (const Field& f : schema()) {
    if (f.section != current) {
      current = f.section;
      out += current + ":\n";
    }
    const std::string value = f.print(config);
    const bool needs_quotes = f.type == FieldType::kString || f.type == FieldType::kChoice;
    out += "  " + f.key + ": " + (needs_quotes ? yamlQuoted(value) : value) + "\n";
  }
  return out;
}

namespace {
std::string configHash(const std::string& text) {
  return fmt::format("{:016x}", fnv1a64(text.data(), text.size()));
}

JobConfig identityOf(const JobConfig& config) {
  JobConfig job = config;
  for (const Field& f : schema()) {
    if (!inIdentity(f)) resetToDefault(job, f);
  }
  return job;
}

// The keys whose printed values differ, in schema order, with both values as toYaml() writes them.
std::vector<IdentityDifference> differences(const JobConfig& a, const JobConfig& b) {
  std::vector<IdentityDifference> out;
  for (const Field& f : schema()) {
    std::string x = f.print(a);
    std::string y = f.print(b);
    if (x == y) continue;
    const bool needs_quotes = f.type == FieldType::kString || f.type == FieldType::kChoice;
    out.push_back(needs_quotes ? IdentityDifference{f.path(), yamlQuoted(x), yamlQuoted(y)}
                               : IdentityDifference{f.path(), std::move(x), std::move(y)});
  }
  return out;
}
}  // namespace

std::string hash(const JobConfig& config) { return configHash(toYaml(identityOf(config))); }

std::string fullHash(const JobConfig& config) { return configHash(toYaml(config)); }

std::vector<std::string> differingKeys(const JobConfig& a, const JobConfig& b) {
  std::vector<std::string> keys;
  for (IdentityDifference& d : differences(a, b)) keys.push_back(std::move(d.key));
  return keys;
}

std::vector<IdentityDifference> identityDifferences(const JobConfig& first, const JobConfig& second) {
  return differences(identityOf(first), identityOf(second));
}

std::vector<std::string> allKeys() {
  std::vector<std::string> keys;
  for (const Field& f : schema()) keys.push_back(f.path());
  return keys;
}

}  // namespace ringtrain::config
