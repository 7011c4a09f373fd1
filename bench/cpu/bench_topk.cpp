// SPDX-License-Identifier: Apache-2.0
/// @file bench_topk.cpp
/// @brief CPU top-k over ragged batches (the radix select of `cpu::topk`), against two baselines
/// measured in the same run: `std::nth_element` + sort on the same 64-bit ranking keys (the
/// previous `cpu::topk`), and `std::partial_sort` of (score, position) pairs.
///
/// Shapes: batch x n candidates, keep ratio 0.2 (LLaVA: n = 576 image tokens -> 115).
#include <dynllava/core/budget.hpp>
#include <dynllava/core/ranking_key.hpp>
#include <dynllava/select/topk.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

using namespace dynllava;

namespace {

struct batch_data {
  std::vector<index_t> indptr;
  std::vector<float> scores;
};

batch_data make_batch(index_t batch, index_t n) {
  batch_data d;
  std::mt19937 g(42);
  std::normal_distribution<float> normal;
  d.indptr.resize(static_cast<std::size_t>(batch) + 1);
  for (index_t b = 0; b <= batch; ++b) d.indptr[static_cast<std::size_t>(b)] = b * n;
  d.scores.resize(static_cast<std::size_t>(batch * n));
  for (auto& s : d.scores) s = normal(g);
  return d;
}

void bm_dynllava_cpu_topk(benchmark::State& state) {
  const auto batch = static_cast<index_t>(state.range(0));
  const auto n = static_cast<index_t>(state.range(1));
  const auto d = make_batch(batch, n);
  std::vector<index_t> out_indptr(d.indptr.size()), out_pos(d.scores.size());
  cpu::topk_workspace ws;
  const host_ragged<const float> scores{make_host_span(d.indptr), make_host_span(d.scores)};
  for (auto _ : state) {
    benchmark::DoNotOptimize(cpu::topk(scores, topk_budget<host_space>::keep_ratio(0.2),
                                       make_host_span(out_indptr), make_host_span(out_pos), {},
                                       ws));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * batch * n);
  state.SetBytesProcessed(state.iterations() * batch * n * static_cast<int64_t>(sizeof(float)));
  state.counters["batch"] = batch;
  state.counters["n"] = n;
}

/// Baseline: per sequence, std::nth_element on the 64-bit ranking keys (`topk_sort_key`), then
/// std::sort of the k kept positions: bit-identical to `cpu::topk`, and what it did before.
void bm_baseline_nth_element_keys(benchmark::State& state) {
  const auto batch = static_cast<index_t>(state.range(0));
  const auto n = static_cast<index_t>(state.range(1));
  const auto d = make_batch(batch, n);
  const index_t k = ratio_budget(n, 0.2);
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(n));
  std::vector<index_t> out(static_cast<std::size_t>(batch * k));
  for (auto _ : state) {
    for (index_t b = 0; b < batch; ++b) {
      const float* row =
          d.scores.data() + static_cast<std::size_t>(b) * static_cast<std::size_t>(n);
      for (index_t i = 0; i < n; ++i) {
        keys[static_cast<std::size_t>(i)] = topk_sort_key(row[i], i, tie_break::smaller_position);
      }
      std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<>{});
      index_t* o = out.data() + b * k;
      for (index_t j = 0; j < k; ++j) {
        o[j] = topk_key_position(keys[static_cast<std::size_t>(j)], tie_break::smaller_position);
      }
      std::sort(o, o + k);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * batch * n);
  state.SetBytesProcessed(state.iterations() * batch * n * static_cast<int64_t>(sizeof(float)));
  state.counters["batch"] = batch;
  state.counters["n"] = n;
}

/// Baseline: per sequence, std::partial_sort of (score, position) pairs then sort of positions.
void bm_baseline_partial_sort(benchmark::State& state) {
  const auto batch = static_cast<index_t>(state.range(0));
  const auto n = static_cast<index_t>(state.range(1));
  const auto d = make_batch(batch, n);
  const index_t k = ratio_budget(n, 0.2);
  std::vector<std::pair<float, index_t>> pairs(static_cast<std::size_t>(n));
  std::vector<index_t> out(static_cast<std::size_t>(batch * k));
  for (auto _ : state) {
    for (index_t b = 0; b < batch; ++b) {
      for (index_t i = 0; i < n; ++i) {
        pairs[static_cast<std::size_t>(i)] = {d.scores[static_cast<std::size_t>(b * n + i)], i};
      }
      std::partial_sort(pairs.begin(), pairs.begin() + k, pairs.end(),
                        [](const auto& x, const auto& y) {
                          return x.first != y.first ? x.first > y.first : x.second < y.second;
                        });
      index_t* o = out.data() + b * k;
      for (index_t j = 0; j < k; ++j) o[j] = pairs[static_cast<std::size_t>(j)].second;
      std::sort(o, o + k);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * batch * n);
  state.SetBytesProcessed(state.iterations() * batch * n * static_cast<int64_t>(sizeof(float)));
  state.counters["batch"] = batch;
  state.counters["n"] = n;
}

}  // namespace

// batch x n: LLaVA's 576 image tokens, then longer candidate lists (k = 20% of n throughout).
void shapes(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{1, 8, 64}, {576, 4096}});
  b->Args({64, 65536});
}

BENCHMARK(bm_dynllava_cpu_topk)->Apply(shapes);
BENCHMARK(bm_baseline_nth_element_keys)->Apply(shapes);
BENCHMARK(bm_baseline_partial_sort)->Apply(shapes);
