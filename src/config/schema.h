// The config schema: one Field per YAML key, with its type, its allowed values and how to reach it in
// JobConfig. Parsing, --set, validation, canonical output and hashing all walk this one table, so a key
// is declared exactly once.
// Checkpoints store their job's YAML, and a checkpoint written before a key existed is judged at that key's
// default (loadStored): a new key's default must be the behaviour from before it, and an existing key's
// default changes only with a thought for the checkpoints that predate the key.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ringtrain/config/config.h"

namespace ringtrain::config {

enum class FieldType { kBool, kInt, kDouble, kString, kChoice };

struct Field {
  std::string section;
  std::string key;
  FieldType type;
  std::vector<std::string> choices;  // kChoice only
  double min_value;                  // kInt and kDouble: inclusive bounds (check may be stricter: optim.eps > 0)
  double max_value;
  // Parses `text` into the field; returns an error description ("" on success).
  std::function<std::string(JobConfig&, const std::string& text)> assign;
  std::function<std::string(const JobConfig&)> print;
  // Range/choice check of the current value; "" when valid.
  std::function<std::string(const JobConfig&)> check;
  // A check that reads other keys as well (may be empty): run once every key is set, and named at the line
  // that set this key.
  std::function<std::string(const JobConfig&)> relation;

  std::string path() const { return section + "." + key; }
};

const std::vector<Field>& schema();
const Field* findField(const std::string& section, const std::string& key);
bool isSection(const std::string& section);
std::vector<std::string> sections();
// The closest candidate by edit distance, or "" when nothing is close.
std::string closestMatch(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace ringtrain::config
