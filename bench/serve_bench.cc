// Benchmarks and tools for the recommendation server:
//   serve_bench gen --items N --dim D --out PATH     a random export (word2vec text) + items.tsv beside it
//   serve_bench scoring --items N --dim D            exact top-k: LibTorch at::mm + at::topk against
//                                                    ringtrain's fp32 kernel and, where the CPU has
//                                                    AVX512-VNNI, its 8-bit prefilter (the same
//                                                    answers, checked), batch 1, 8, 20 and 64
//   serve_bench faiss --items N --dim D              FAISS HNSW: build time, recall@10 against exact,
//                                                    queries/s against exact
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/topk.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "ringtrain/core/logging.h"
#include "ringtrain/serve/model.h"
#include "ringtrain/serve/scorer.h"
#include "serve/ann_index.h"
#include "serve/scorer_paths.h"
#include "ringtrain/core/allocator.h"

using namespace ringtrain::serve;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void generate(int64_t n, int64_t dim, const std::string& out_path, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::ofstream out(out_path);
  out << n << " " << dim << "\n";
  char buf[32];
  for (int64_t i = 0; i < n; ++i) {
    out << "item" << i;
    for (int64_t d = 0; d < dim; ++d) {
      std::snprintf(buf, sizeof buf, " %.5f", normal(rng));
      out << buf;
    }
    out << "\n";
  }
  std::ofstream items((std::filesystem::path(out_path).parent_path() / "items.tsv").string());
  items << "id\tkey\tname\tcategory\n";
  for (int64_t i = 0; i < n; ++i) items << i << "\titem" << i << "\tProduct " << i << "\tcat" << i % 20 << "\n";
}

std::vector<float> randomRows(int64_t n, int64_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n * dim));
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += std::pow(v[r * dim + d] = normal(rng), 2);
    for (int64_t d = 0; d < dim; ++d) v[r * dim + d] /= static_cast<float>(std::sqrt(s));
  }
  return v;
}

// Same rows and the same score bits, query by query.
bool sameHits(const std::vector<std::vector<Hit>>& a, const std::vector<std::vector<Hit>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    for (size_t j = 0; j < a[i].size(); ++j) {
      if (a[i][j].row != b[i][j].row || std::memcmp(&a[i][j].score, &b[i][j].score, sizeof(float)) != 0) return false;
    }
  }
  return true;
}

void scoring(int64_t n, int64_t dim, int k) {
  at::set_num_threads(1);
  const auto rows = randomRows(n, dim, 1);
  const PackedCatalog catalog(rows.data(), n, dim);
  const at::Tensor c = at::from_blob(const_cast<float*>(rows.data()), {n, dim});
  std::printf("exact top-%d over %lld x %lld, 1 thread (SIMD kernel: %s)\n", k, static_cast<long long>(n),
              static_cast<long long>(dim), simdKernelName());
  std::printf("%-6s %-30s %12s %12s %10s\n", "batch", "method", "ms/batch", "queries/s", "GFLOP/s");
  for (const int b : {1, 8, 20, 64}) {
    const auto qs = randomRows(b, dim, 2);
    const at::Tensor q = at::from_blob(const_cast<float*>(qs.data()), {b, dim});
    std::vector<Query> queries;
    for (int i = 0; i < b; ++i) queries.push_back({qs.data() + i * dim, k, nullptr});
    const int reps = b == 1 ? 30 : 6;
    // Methods: LibTorch, ringtrain's fp32 scan, its 8-bit prefilter (what topK() uses where it exists).
    const int methods = catalog.hasInt8() ? 3 : 2;
    if (methods == 3 && !sameHits(topKInt8Prefilter(catalog, queries), topKFp32Scan(catalog, queries))) {
      std::fprintf(stderr, "serve_bench: the 8-bit prefilter and the fp32 scan disagree at batch %d\n", b);
      std::exit(1);
    }
    for (int method = 0; method < methods; ++method) {
      double best = 1e30;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = Clock::now();
        if (method == 0) {
          const at::Tensor s = at::mm(q, c.t());
          const auto top = at::topk(s, k, 1);
          (void)top;
        } else if (method == 1) {
          const auto hits = topKFp32Scan(catalog, queries);
          (void)hits;
        } else {
          const auto hits = topKInt8Prefilter(catalog, queries);
          (void)hits;
        }
        best = std::min(best, seconds(t0));
      }
      const double flops = 2.0 * b * n * dim;
      const char* names[] = {"LibTorch at::mm + at::topk", "ringtrain fp32 kernel + heap", "ringtrain int8 + fp32 rescore"};
      std::printf("%-6d %-30s %12.3f %12.0f %10.2f\n", b, names[method], best * 1e3, b / best, flops / best / 1e9);
    }
  }
}

void faissBench(int64_t n, int64_t dim, int queries_n, int k) {
  if (!haveFaiss()) {
    std::printf("this build has no FAISS\n");
    return;
  }
  auto model = std::make_shared<Model>();
  model->rows = n;
  model->dim = dim;
  model->packed = PackedCatalog(randomRows(n, dim, 1), dim);
  // Queries near catalog items (an item's vector plus noise), as real queries are.
  std::mt19937_64 rng(3);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  std::vector<float> qs(static_cast<size_t>(queries_n * dim));
  for (int i = 0; i < queries_n; ++i) {
    const int64_t r = static_cast<int64_t>(rng() % n);
    for (int64_t d = 0; d < dim; ++d) qs[i * dim + d] = model->row(r)[d] + noise(rng);
  }
  std::vector<Query> queries;
  for (int i = 0; i < queries_n; ++i) queries.push_back({qs.data() + i * dim, k, nullptr});
  auto t0 = Clock::now();
  const auto index = buildAnnIndex(*model);
  const double build_s = seconds(t0);
  const int batch = 64;
  double exact_s = 0, ann_s = 0;
  int64_t found = 0;
  for (int start = 0; start < queries_n; start += batch) {
    const std::vector<Query> part(queries.begin() + start, queries.begin() + std::min(queries_n, start + batch));
    t0 = Clock::now();
    const auto exact = topK(model->packed, part);
    exact_s += seconds(t0);
    t0 = Clock::now();
    const auto approx = index->search(part);
    ann_s += seconds(t0);
    for (size_t i = 0; i < part.size(); ++i) {
      std::set<int64_t> truth;
      for (const auto& h : exact[i]) truth.insert(h.row);
      for (const auto& h : approx[i]) found += truth.count(h.row);
    }
  }
  std::printf("FAISS HNSW (M 16, efConstruction 40, efSearch 64) over %lld x %lld, %d queries in batches of %d\n",
              static_cast<long long>(n), static_cast<long long>(dim), queries_n, batch);
  std::printf("  build %.2f s\n", build_s);
  std::printf("  recall@%d vs exact: %.4f\n", k, static_cast<double>(found) / (static_cast<double>(queries_n) * k));
  std::printf("  exact (ringtrain kernel): %.0f queries/s\n", queries_n / exact_s);
  std::printf("  faiss hnsw              : %.0f queries/s  (%.2fx exact)\n", queries_n / ann_s, exact_s / ann_s);
}

}  // namespace

int main(int argc, char** argv) {
  ringtrain::keepFreedMemoryInProcess();  // as the ringtrain executable does: see the header
  ringtrain::log::init();
  CLI::App app{"serve benchmarks"};
  app.require_subcommand(1);
  int64_t n = 100000, dim = 64;
  int k = 10, queries = 2000;
  uint64_t seed = 1;
  std::string out;
  auto* gen = app.add_subcommand("gen", "write a random export");
  gen->add_option("--items", n);
  gen->add_option("--dim", dim);
  gen->add_option("--seed", seed);
  gen->add_option("--out", out)->required();
  auto* sc = app.add_subcommand("scoring", "exact scorer: LibTorch vs ringtrain kernel");
  sc->add_option("--items", n);
  sc->add_option("--dim", dim);
  auto* fa = app.add_subcommand("faiss", "FAISS recall and speed against exact");
  fa->add_option("--items", n);
  fa->add_option("--dim", dim);
  fa->add_option("--queries", queries);
  CLI11_PARSE(app, argc, argv);
  if (gen->parsed()) generate(n, dim, out, seed);
  if (sc->parsed()) scoring(n, dim, k);
  if (fa->parsed()) faissBench(n, dim, queries, k);
  return 0;
}
