#include "ringtrain/config/config.h"

#include <cstdint>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "config/schema.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/hash.h"

namespace ringtrain::config {
namespace {

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

void assignChecked(JobConfig& config, const Field& f, const std::string& text, const std::string& where) {
  if (std::string problem = f.assign(config, text); !problem.empty()) {
    RT_THROW(ConfigError, where, ": ", f.path(), ": ", problem);
  }
  if (std::string problem = f.check(config); !problem.empty()) {
    RT_THROW(ConfigError, where, ": ", f.path(), ": ", problem);
  }
}

// With `unknown_keys`, keys and sections this version does not know are listed there instead of rejected.
void applyYaml(JobConfig& config, const std::string& text, const std::string& origin,
               std::vector<std::string>* unknown_keys = nullptr) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    RT_THROW(ConfigError, located(origin, e.mark), ": YAML syntax error: ", e.msg);
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) {
    RT_THROW(ConfigError, located(origin, root.Mark()), ": expected a mapping of sections (run:, data:, ...)");
  }
  for (const auto& section_entry : root) {
    const std::string section = section_entry.first.Scalar();
    const YAML::Node& body = section_entry.second;
    const std::string where = located(origin, section_entry.first.Mark());
    if (!isSection(section) && unknown_keys != nullptr) {
      unknown_keys->push_back(section);
      continue;
    }
    if (!isSection(section)) {
      RT_THROW(ConfigError, where, ": unknown section '", section, "'", suggestion(closestMatch(section, sections())));
    }
    if (body.IsNull()) continue;
    if (!body.IsMap()) RT_THROW(ConfigError, where, ": ", section, ": expected a mapping of keys");
    for (const auto& entry : body) {
      const std::string key = entry.first.Scalar();
      const std::string key_where = located(origin, entry.first.Mark());
      if (unknown_keys != nullptr && findField(section, key) == nullptr) {
        unknown_keys->push_back(section + "." + key);
        continue;
      }
      const Field& f = fieldOrThrow(section, key, key_where);
      const YAML::Node& value = entry.second;
      if (value.IsNull() && (f.type == FieldType::kString)) {
        assignChecked(config, f, "", key_where);
        continue;
      }
      if (!value.IsScalar()) {
        RT_THROW(ConfigError, key_where, ": ", f.path(), ": expected a single value, got a ",
                 value.IsNull() ? "null" : value.IsMap() ? "mapping" : "list");
      }
      assignChecked(config, f, value.Scalar(), key_where);
    }
  }
}

void applyOverrides(JobConfig& config, const std::vector<Override>& overrides) {
  for (const Override& o : overrides) setValue(config, o.key, o.value);
}

std::string quoted(const std::string& s) {
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

}  // namespace

Override parseOverride(const std::string& text) {
  const size_t eq = text.find('=');
  const size_t dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq) {
    RT_THROW(ConfigError, "--set '", text, "': expected section.key=value (for example data.window=5)");
  }
  return Override{text.substr(0, eq), text.substr(eq + 1)};
}

void setValue(JobConfig& config, const std::string& key, const std::string& value) {
  const size_t dot = key.find('.');
  const std::string where = "--set " + key;
  if (dot == std::string::npos) RT_THROW(ConfigError, where, ": expected section.key");
  const Field& f = fieldOrThrow(key.substr(0, dot), key.substr(dot + 1), "--set");
  assignChecked(config, f, value, "--set");
}

void validate(const JobConfig& config) {
  for (const Field& f : schema()) {
    if (std::string problem = f.check(config); !problem.empty()) {
      RT_THROW(ConfigError, f.path(), ": ", problem);
    }
  }
}

JobConfig loadString(const std::string& yaml, const std::string& origin, const std::vector<Override>& overrides) {
  JobConfig config;
  applyYaml(config, yaml, origin);
  applyOverrides(config, overrides);
  validate(config);
  return config;
}

JobConfig loadFile(const std::string& path, const std::vector<Override>& overrides) {
  std::ifstream in(path);
  if (!in) RT_THROW(ConfigError, path, ": cannot open config file");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) RT_THROW(ConfigError, path, ": cannot read config file");
  return loadString(text.str(), path, overrides);
}

JobConfig loadStored(const std::string& yaml, const std::string& origin, std::vector<std::string>* unknown_keys) {
  JobConfig config;
  std::vector<std::string> skipped;
  applyYaml(config, yaml, origin, &skipped);
  validate(config);
  if (unknown_keys != nullptr) *unknown_keys = std::move(skipped);
  return config;
}

JobConfig fromOverrides(const std::vector<Override>& overrides) {
  JobConfig config;
  applyOverrides(config, overrides);
  validate(config);
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
    out += "  " + f.key + ": " + (needs_quotes ? quoted(value) : value) + "\n";
  }
  return out;
}

namespace {
// Checkpoints store the config hash, and resuming compares it. It was first written with this offset basis
// (FNV's, missing its last digit); keeping it keeps every checkpoint written so far resumable.
constexpr uint64_t kConfigHashBasis = 1469598103934665603ull;

std::string configHash(const std::string& text) {
  return fmt::format("{:016x}", fnv1a64(text.data(), text.size(), kConfigHashBasis));
}
}  // namespace

namespace {
// The job's identity names what training computes. How this invocation runs it (resume or not, fault
// injection, how sparse rows travel: every ddp.sparse_sync mode sums the same rows in the same rank order,
// with or without ddp.overlap_sparse), how it is evaluated and what it logs are reset to their defaults, so
// a resumed run recognises its own checkpoints. (Evaluation draws from its own seeded generators, not
// training's.)
JobConfig identityOf(const JobConfig& config) {
  JobConfig job = config;
  job.checkpoint.resume = CheckpointOptions{}.resume;
  job.run.crash_at_step = RunOptions{}.crash_at_step;
  job.ddp.sparse_sync = DdpOptions{}.sparse_sync;
  job.ddp.overlap_sparse = DdpOptions{}.overlap_sparse;
  job.eval = EvalOptions{};
  job.log = LogOptions{};
  return job;
}
}  // namespace

std::string hash(const JobConfig& config) { return configHash(toYaml(identityOf(config))); }

std::string fullHash(const JobConfig& config) { return configHash(toYaml(config)); }

std::vector<std::string> differingKeys(const JobConfig& a, const JobConfig& b) {
  std::vector<std::string> keys;
  for (const Field& f : schema()) {
    if (f.print(a) != f.print(b)) keys.push_back(f.path());
  }
  return keys;
}

std::vector<IdentityDifference> identityDifferences(const JobConfig& first, const JobConfig& second) {
  const JobConfig a = identityOf(first);
  const JobConfig b = identityOf(second);
  std::vector<IdentityDifference> out;
  for (const Field& f : schema()) {
    std::string x = f.print(a);
    std::string y = f.print(b);
    if (x != y) out.push_back(IdentityDifference{f.path(), std::move(x), std::move(y)});
  }
  return out;
}

std::vector<std::string> allKeys() {
  std::vector<std::string> keys;
  for (const Field& f : schema()) keys.push_back(f.path());
  return keys;
}

}  // namespace ringtrain::config
