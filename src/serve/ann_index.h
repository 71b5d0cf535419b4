// Approximate nearest-neighbour search for large catalogs (serve.index: faiss). Built when a model is
// loaded, before it is swapped in; immutable afterwards and searched concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ringtrain/serve/scorer.h"

namespace ringtrain::serve {

struct Model;

class AnnIndex {
 public:
  virtual ~AnnIndex() = default;
  // Approximate top-k per query (inner product on unit vectors), excluded rows removed, best first.
  virtual std::vector<std::vector<Hit>> search(const std::vector<Query>& queries) const = 0;
};

struct AnnOptions {
  int hnsw_m = 16;
  int ef_construction = 40;
  int ef_search = 64;
};

// True when this build has FAISS.
bool haveFaiss();
// An HNSW index (inner product) over the model's vectors; throws ConfigError when built without FAISS.
std::shared_ptr<const AnnIndex> buildAnnIndex(const Model& model, const AnnOptions& options = {});

}  // namespace ringtrain::serve
