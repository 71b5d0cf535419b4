// `ringtrain neighbors --model EXPORT.txt [--items items.tsv] --item TOKEN [-k 10]`: the nearest items by
// cosine in an exported model, with their names and categories when items.tsv is given.
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <unordered_map>

#include "app/commands.h"
#include "ringtrain/core/error.h"
#include "ringtrain/data/items_file.h"
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

// items.tsv (ringtrain/data/items_file.h). A token may be either the id or the key; the first line of each
// wins.
std::unordered_map<std::string, ItemInfo> readItems(const std::string& path) {
  std::unordered_map<std::string, ItemInfo> out;
  data::forEachItemsRow(path, /*require_id=*/false, [&out](const data::ItemsRow& row) {
    const ItemInfo info{std::string(row.name), std::string(row.category)};
    if (!row.id.empty()) out.emplace(row.id, info);
    if (!row.key.empty()) out.emplace(row.key, info);
  });
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
      const float* row = vectors.row(static_cast<size_t>(index));
      if (std::all_of(row, row + vectors.dim, [](float x) { return x == 0.0f; })) {
        RT_THROW(DataError, "item '", args->item, "' has a zero vector in ", args->model,
                 ": it has no direction, so no neighbours by cosine");
      }
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
