// `ringtrain neighbors --model EXPORT.txt [--items items.tsv] --item TOKEN [-k 10]`: the nearest items by
// cosine in an exported model, with their names and categories when items.tsv is given.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>
#include <unordered_map>

#include "app/commands.h"
#include "ringtrain/core/error.h"
#include "ringtrain/model/word2vec_io.h"

namespace ringtrain::app {
namespace {

struct NeighborsArgs {
  std::string model;
  std::string items;
  std::string item;
  int k = 10;
};

struct ItemInfo {
  std::string name;
  std::string category;
};

// items.tsv: a header line, then id <TAB> key <TAB> name <TAB> category. A token may be either the id or
// the key; both map to the row.
std::unordered_map<std::string, ItemInfo> readItems(const std::string& path) {
  std::ifstream in(path);
  if (!in) RT_THROW(DataError, path, ": cannot open");
  std::unordered_map<std::string, ItemInfo> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files, as the other readers take them
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string field;
    while (std::getline(ss, field, '\t')) fields.push_back(field);
    if (line_no == 1) {  // the header the training side's reader asks for (data/item_table.cc)
      const bool ok = fields.size() >= 3 && fields.size() <= 4 && fields[0] == "id" && fields[1] == "key" &&
                      fields[2] == "name" && (fields.size() == 3 || fields[3] == "category");
      if (!ok) RT_THROW(DataError, path, ":1: expected the header 'id<TAB>key<TAB>name<TAB>category', got '", line, "'");
      continue;
    }
    if (line.empty()) continue;
    if (fields.size() < 2) RT_THROW(DataError, path, ":", line_no, ": expected tab-separated id, key, name, category");
    ItemInfo info{fields.size() > 2 ? fields[2] : "", fields.size() > 3 ? fields[3] : ""};
    out.emplace(fields[0], info);
    out.emplace(fields[1], info);
  }
  return out;
}

}  // namespace

void addNeighborsCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("neighbors", "print the nearest items of an exported model");
  auto args = std::make_shared<NeighborsArgs>();
  cmd->add_option("--model", args->model, "exported vectors (word2vec text format)")->required();
  cmd->add_option("--items", args->items, "items.tsv for names and categories");
  cmd->add_option("--item", args->item, "the item's token")->required();
  cmd->add_option("-k", args->k, "how many neighbours")->check(CLI::Range(1, std::numeric_limits<int>::max()));
  cmd->callback([&body, args] {
    body = [args] {
      const model::WordVectors vectors = model::readWord2Vec(args->model);
      std::unordered_map<std::string, ItemInfo> items;
      if (!args->items.empty()) items = readItems(args->items);
      const int64_t index = vectors.find(args->item);
      if (index < 0) RT_THROW(DataError, "item '", args->item, "' is not in ", args->model);
      auto describe = [&](const std::string& token) {
        const auto it = items.find(token);
        if (it == items.end()) return std::string();
        return it->second.name + (it->second.category.empty() ? "" : "  [" + it->second.category + "]");
      };
      std::cout << "nearest to " << args->item << "  " << describe(args->item) << "\n";
      int rank = 0;
      for (const model::Neighbor& n : model::nearestNeighbors(vectors, index, args->k)) {
        const std::string& token = vectors.tokens[static_cast<size_t>(n.index)];
        char sim[32];
        std::snprintf(sim, sizeof(sim), "%.4f", static_cast<double>(n.similarity));
        std::cout << ++rank << "\t" << sim << "\t" << token << "\t" << describe(token) << "\n";
      }
      return 0;
    };
  });
}

}  // namespace ringtrain::app
