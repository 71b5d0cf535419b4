// FAISS HNSW index (compiled only when CMake found FAISS: RINGTRAIN_HAVE_FAISS).
#include <faiss/IndexHNSW.h>
#include <faiss/impl/HNSW.h>

#include <algorithm>
#include <cstdint>

#include "ringtrain/core/error.h"
#include "ringtrain/serve/model.h"
#include "serve/ann_index.h"

namespace ringtrain::serve {
namespace {

class FaissHnswIndex : public AnnIndex {
 public:
  FaissHnswIndex(const Model& model, const AnnOptions& options)
      : index_(static_cast<int>(model.dim), options.hnsw_m, faiss::METRIC_INNER_PRODUCT), dim_(model.dim),
        ef_search_(options.ef_search) {
    index_.hnsw.efConstruction = options.ef_construction;
    RT_CHECK(model.packed.hasRows(), "the model's catalog does not hold its rows (built from a pointer?)");
    index_.add(model.rows, model.row(0));
  }

  std::vector<std::vector<Hit>> search(const std::vector<Query>& queries) const override {
    const int64_t n = static_cast<int64_t>(queries.size());
    int64_t want = 1;
    for (const auto& q : queries) {
      want = std::max<int64_t>(want, q.k + static_cast<int64_t>(q.exclude ? q.exclude->size() : 0));
    }
    want = std::min<int64_t>(want, index_.ntotal);
    std::vector<float> x(static_cast<size_t>(n * dim_));
    for (int64_t i = 0; i < n; ++i) std::copy_n(queries[i].vector, dim_, x.data() + i * dim_);
    std::vector<float> distances(static_cast<size_t>(n * want));
    std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(n * want));
    faiss::SearchParametersHNSW params;
    params.efSearch = std::max<int>(ef_search_, static_cast<int>(want));
    index_.search(n, x.data(), want, distances.data(), labels.data(), &params);
    std::vector<std::vector<Hit>> out(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto* exclude = queries[i].exclude;
      for (int64_t j = 0; j < want && static_cast<int>(out[i].size()) < queries[i].k; ++j) {
        const faiss::Index::idx_t row = labels[i * want + j];
        if (row < 0) continue;
        if (exclude && std::find(exclude->begin(), exclude->end(), row) != exclude->end()) continue;
        out[i].push_back({row, distances[i * want + j]});
      }
    }
    return out;
  }

 private:
  faiss::IndexHNSWFlat index_;  // search() is const and thread-safe in FAISS
  int64_t dim_;
  int ef_search_;
};

}  // namespace

bool haveFaiss() { return true; }

std::shared_ptr<const AnnIndex> buildAnnIndex(const Model& model, const AnnOptions& options) {
  return std::make_shared<FaissHnswIndex>(model, options);
}

}  // namespace ringtrain::serve
