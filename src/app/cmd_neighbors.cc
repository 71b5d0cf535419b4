// `ringtrain neighbors --model EXPORT.txt [--items items.tsv] --item TOKEN [-k 10]`: the nearest items by
// cosine in an exported model, with their keys, names and categories from items.tsv (by default the one
// beside the model, as the server reads it). The item may be a token or a key of items.tsv.
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>

#include "app/commands.h"
#include "core/quoted.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
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

}  // namespace

void addNeighborsCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("neighbors", "print the nearest items of an exported model");
  auto args = std::make_shared<NeighborsArgs>();
  cmd->add_option("--model", args->model, "exported vectors (word2vec text format)")->required();
  cmd->add_option("--items", args->items, "items.tsv with names (default: items.tsv beside the model, or beside the file a linked model leads to)");
  cmd->add_option("--item", args->item, "the item: its token, or its key in items.tsv")->required();
  // CLI11's Range says "not in range" of text that is no number at all: this says which it is.
  const CLI::Validator positive_count(
      [](std::string& text) -> std::string {
        int value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec == std::errc::result_out_of_range) return "'" + text + "' is too large";
        if (ec != std::errc() || end != text.data() + text.size()) return "'" + text + "' is not a whole number";
        if (value < 1) return "'" + text + "': give 1 or more";
        return {};
      },
      "INT >= 1");
  cmd->add_option("-k", args->k, "how many neighbours")->check(positive_count)->capture_default_str();
  cmd->callback([&body, args] {
    body = [args] {
      const model::WordVectors vectors = model::readWord2Vec(args->model);
      const auto rows = static_cast<int64_t>(vectors.tokens.size());
      const std::string items_path = args->items.empty() ? data::itemsBeside(args->model) : args->items;
      data::TokenNames items;
      if (!items_path.empty()) {
        items = data::nameTokens(items_path, rows, [&](const std::string& t) { return vectors.find(t); });
        if (items.named == 0 && rows > 0) {  // as serve says it
          warn("neighbors: {} names none of the model's {} tokens (no id or key matches a token): no names",
               items_path, rows);
        }
      }
      int64_t index = vectors.find(args->item);
      const std::string item_text = ::ringtrain::detail::printable(args->item);  // for messages
      if (index < 0) {
        const auto by_key = items.row_of_key.find(args->item);
        if (by_key != items.row_of_key.end()) index = by_key->second;
      }
      if (index < 0 && !items_path.empty()) {
        // A line of items.tsv may name it (by id or key) while the model holds no vector for its item (left out
        // of the export as untrained, or under data.min_count): say so, not that the file does not know it.
        data::ItemsRow found;
        std::string id;
        data::forEachItemsRow(items_path, /*require_id=*/false, [&](const data::ItemsRow& row) {
          if (id.empty() && (row.id == args->item || row.key == args->item)) {
            id = std::string(row.id.empty() ? row.key : row.id);
            found.line = row.line;
          }
        });
        if (!id.empty() && vectors.find(id) >= 0) {
          // An id listed on two lines: the first names it (the trainer's and serve's rule), a later line's key
          // finds nothing.
          RT_THROW(DataError, "item '", item_text, "' is the key of ", items_path, ":", found.line, ", a later line for id ",
                   ::ringtrain::detail::printable(id), ", which an earlier line already names: only an id's first "
                   "line names it; use that line's key or the id");
        }
        if (!id.empty()) {
          RT_THROW(DataError, "item '", item_text, "' (", items_path, ":", found.line, ", id ", id,
                   ") has no vector in ", args->model, ": the export leaves out items training never saw (and the "
                   "corpus items under data.min_count)");
        }
      }
      if (index < 0) {
        RT_THROW(DataError, "item '", item_text, "' is not in ", args->model,
                 items_path.empty() ? "" : ", nor a key of " + items_path);
      }
      const float* row = vectors.row(static_cast<size_t>(index));
      if (std::all_of(row, row + vectors.dim, [](float x) { return x == 0.0f; })) {
        RT_THROW(DataError, "item '", item_text, "' has a zero vector in ", args->model,
                 ": it has no direction, so no neighbours by cosine");
      }
      // "KEY  NAME  [CATEGORY]", each part where items.tsv has it (the key only when it is not the token).
      // What the files hold goes out printable (detail::printable): invalid UTF-8 and control bytes as \xNN.
      using ::ringtrain::detail::printable;
      auto describe = [&](int64_t r) {
        if (items.names.empty()) return std::string();
        const auto i = static_cast<size_t>(r);
        std::string text = items.keys[i] == vectors.tokens[i] ? "" : printable(items.keys[i]);
        if (!items.names[i].empty()) text += (text.empty() ? "" : "  ") + printable(items.names[i]);
        if (!items.categories[i].empty()) text += "  [" + printable(items.categories[i]) + "]";
        return text;
      };
      std::cout << "nearest to " << printable(vectors.tokens[static_cast<size_t>(index)]) << "  " << describe(index)
                << "\n";
      int rank = 0;
      for (const model::Neighbor& n : model::nearestNeighbors(vectors, index, args->k)) {
        char sim[32];
        std::snprintf(sim, sizeof(sim), "%.4f", static_cast<double>(n.similarity));
        std::cout << ++rank << "\t" << sim << "\t" << printable(vectors.tokens[static_cast<size_t>(n.index)]) << "\t"
                  << describe(n.index) << "\n";
      }
      return 0;
    };
  });
}

}  // namespace ringtrain::app
