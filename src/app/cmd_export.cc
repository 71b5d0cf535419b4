// `ringtrain export [JOB.yaml] [--checkpoint FILE|DIR] [-o OUT]`: writes the item vectors of a checkpoint in
// the word2vec text format (atomically). The model is rebuilt from the configuration stored in the
// checkpoint, so the job file only tells where the checkpoints and the output go.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/all.h>
#include <ATen/ops/isfinite.h>

#include "app/commands.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/corpus.h"
#include "ringtrain/model/word2vec_io.h"
#include "ringtrain/train/checkpoint.h"
#include "ringtrain/train/item_export.h"
#include "ringtrain/train/evaluation.h"
#include "ringtrain/train/model_state.h"
#include "ringtrain/train/trainer.h"

namespace ringtrain::app {
namespace {

struct ExportArgs {
  ConfigArgs config;
  std::string checkpoint;
  std::string out;
};

}  // namespace

void addExportCommand(CLI::App& app, CommandBody& body) {
  auto* cmd = app.add_subcommand("export", "write a checkpoint's item vectors in the word2vec text format");
  auto args = std::make_shared<ExportArgs>();
  addConfigArgs(cmd, args->config, /*config_required=*/false);
  cmd->add_option("--checkpoint", args->checkpoint,
                  "checkpoint file, or a directory (its newest valid checkpoint); default: the job's checkpoint dir");
  cmd->add_option("-o,--out", args->out, "output file; default: <run.output_dir>/embeddings.txt");
  cmd->callback([&body, args] {
    body = [args] {
      // Many tools read "-" as standard output: said, not written as a file named "-" (with an items.tsv).
      if (args->out == "-") {
        RT_THROW(ConfigError, "-o -: an export is written to a file (atomically, never half there), not to "
                 "standard output; give a file's path");
      }
      const config::JobConfig job = resolveConfig(args->config);
      std::string source;
      const train::Checkpoint ckpt = train::readRequestedCheckpoint(args->checkpoint, job, &source);
      const auto model = train::modelFromCheckpoint(ckpt, source);
      const at::Tensor vectors = train::itemVectors(*model);
      // Training never checkpoints non-finite parameters; a file that holds them was made some other way,
      // and readers of the export (neighbors, serve) refuse NaN.
      if (!at::isfinite(vectors).all().item<bool>()) {
        RT_THROW(DataError, "checkpoint ", source, ": its item vectors hold NaN or infinite values; nothing exported");
      }
      const std::string out =
          args->out.empty() ? (std::filesystem::path(job.run.output_dir) / "embeddings.txt").string() : args->out;
      // The corpus of the job that wrote the checkpoint too: without a job file, `job` is the defaults.
      std::vector<std::string> ignored;
      const config::JobConfig writer = config::loadStored(ckpt.config_yaml, source + " (stored configuration)", &ignored);
      // -o must not name a file the export reads or the job depends on: the vectors would replace it (a
      // checkpoint, the job file, the corpus), and exit 0.
      train::refuseInputsAsExport("-o", out, {{"checkpoint it exports", source},
                                 {"job file", args->config.path},
                                 {"job's corpus", data::jobCorpusPath(job)},
                                 {"job's corpus cache", data::jobCorpusPath(job) + ".rtc"},
                                 {"job's items file", data::jobItemsPath(job)},
                                 {"job's metrics file", train::metricsPath(job)},
                                 {"corpus of the job that wrote the checkpoint", data::jobCorpusPath(writer)},
                                 {"corpus cache of the job that wrote the checkpoint", data::jobCorpusPath(writer) + ".rtc"},
                                 {"items file of the job that wrote the checkpoint", data::jobItemsPath(writer)},
                                 {"metrics file of the job that wrote the checkpoint", train::metricsPath(writer)}});
      // Nor the items.tsv the names are copied to beside the vectors.
      train::refuseItemsCopyAsExport("-o", out);
      // Nor a file among the checkpoints (another one, or a new name there): resume and eval read that directory.
      for (const std::string& dir : {train::checkpointDir(job), train::checkpointDir(writer)}) {
        std::error_code ec;
        const auto parent = std::filesystem::absolute(out, ec).parent_path();
        if (!ec && std::filesystem::equivalent(parent, dir, ec)) {
          RT_THROW(ConfigError, "-o ", out, " is in the checkpoint directory ", dir, "; write the vectors elsewhere");
        }
      }
      // The names of the job that trained it, else this job's.
      std::error_code ec;
      const std::string writer_items = data::jobItemsPath(writer);
      const std::string items = std::filesystem::is_regular_file(writer_items, ec) ? writer_items : data::jobItemsPath(job);
      // The stored corpus path is as the job gave it: a relative one is found only from where training ran.
      // No corpus there, no names beside the vectors either: said, not left to serve and neighbors to find.
      const std::string writer_corpus = data::jobCorpusPath(writer);
      if (!std::filesystem::is_regular_file(items, ec) && !std::filesystem::exists(writer_corpus, ec)) {
        warn("{} (the corpus of the job that wrote the checkpoint) is not found from {}, nor its items: no items.tsv "
             "is put beside the vectors. Run export where training ran, or give the job file (data.items)",
             writer_corpus, std::filesystem::current_path(ec).string());
      }
      if (items != writer_items && std::filesystem::is_regular_file(items, ec)) {
        // Numbered items (1, 2, ...) are found in any corpus's items file: nothing here can tell whether it
        // names the same things.
        const std::string writers = writer_items.empty()
                                        ? std::string("the job that wrote the checkpoint had no items file (data.items: none)")
                                        : writer_items + " (the items of the job that wrote the checkpoint) is not found from " +
                                              std::filesystem::current_path(ec).string();
        warn("{}: the names put beside the vectors are this job file's, {}, which are right only if both jobs "
             "trained on the same items", writers, items);
      }
      const std::vector<int32_t> untrained = train::untrainedItems(ckpt, source);
      std::vector<std::string> exported_tokens;
      for (size_t i = 0, next = 0; i < ckpt.vocab.size(); ++i) {
        if (next < untrained.size() && static_cast<size_t>(untrained[next]) == i) {
          ++next;
        } else {
          exported_tokens.push_back(ckpt.vocab[i]);
        }
      }
      train::ItemsBeside names(out, items, exported_tokens);
      const train::ExportSummary exported = train::writeItemVectors(out, ckpt.vocab, vectors, untrained);
      names.place();
      std::cout << "wrote " << exported.written << " vectors of dimension " << vectors.size(1) << " (step "
                << ckpt.global_step << ") to " << out;
      if (exported.left_out > 0) {
        std::cout << "; left out " << exported.left_out << " items that training never paired (untrained)";
      }
      std::cout << "\n";
      return 0;
    };
  });
}

}  // namespace ringtrain::app
