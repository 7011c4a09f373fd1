// SPDX-License-Identifier: Apache-2.0
/// @file bench_llama.cpp
/// @brief CPU fp32 llama_model: a 600-token prefill and one decode step over 600 cached
/// tokens (batch 1), each ending in the last row's logits. The PyTorch peer
/// bench/torch/llama_peer.py does the same math in eager PyTorch.
///
/// Shape: hidden 1024, 8 heads of 128, SwiGLU MLP 2816, 4 layers, vocab 1000, random weights.
/// The nn calls run on one thread (`nn::set_thread_count(1)`); run with one BLAS thread
/// (OPENBLAS_NUM_THREADS=1) and pinned.
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/model/llama.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/parallel.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <numeric>
#include <vector>

using namespace dynllava;

namespace {

constexpr index_t tokens = 600;

const llama_config& bench_config() {
  static const llama_config c{1024, 4, 8, 2816, 1000};
  return c;
}

const llama_model& bench_model() {
  static const llama_model m(bench_config(), random_llama_weights(bench_config(), 7));
  return m;
}

std::vector<std::int32_t> prompt() {
  std::vector<std::int32_t> t(tokens);
  for (index_t i = 0; i < tokens; ++i) t[static_cast<std::size_t>(i)] = (i * 37) % 1000;
  return t;
}

/// Embedding, every layer without a cache, the last row's logits; appends K/V to `cache` when
/// it is given.
std::vector<float> prefill(const llama_model& m, contiguous_kv_cache* cache) {
  const auto H = static_cast<std::size_t>(m.hidden());
  const auto ids = prompt();
  std::vector<float> h(ids.size() * H), k(h.size()), v(h.size());
  std::vector<index_t> pos(ids.size());
  std::iota(pos.begin(), pos.end(), 0);
  const std::vector<index_t> indptr{0, tokens};
  m.embed(make_host_span(ids), make_host_span(h));
  for (index_t l = 0; l < m.layers(); ++l) {
    m.layer(l, {make_host_span(indptr), make_host_span(h), m.hidden()},
            make_host_span(std::as_const(pos)), nullptr, make_host_span(k), make_host_span(v));
    if (cache != nullptr) {
      for (std::size_t i = 0; i < ids.size(); ++i) {
        cache->append(l, 0, k.data() + i * H, v.data() + i * H, pos[i]);
      }
    }
  }
  std::vector<float> logits(static_cast<std::size_t>(m.vocab()));
  m.logits(host_span<const float>(h.data() + (ids.size() - 1) * H, H), make_host_span(logits));
  return logits;
}

void bm_llama_prefill(benchmark::State& state) {
  nn::set_thread_count(1);  // the targets are single-thread (with OPENBLAS_NUM_THREADS=1)
  const auto& m = bench_model();
  for (auto _ : state) {
    benchmark::DoNotOptimize(prefill(m, nullptr));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * tokens);
  state.counters["tokens"] = tokens;
}

/// One new token at position 600 through every layer over the 600 cached tokens, then its
/// logits. The cache is not appended to, so every iteration sees the same 600 tokens.
void bm_llama_decode_step(benchmark::State& state) {
  nn::set_thread_count(1);  // the targets are single-thread (with OPENBLAS_NUM_THREADS=1)
  const auto& m = bench_model();
  const auto H = static_cast<std::size_t>(m.hidden());
  contiguous_kv_cache cache({m.layers(), 1, m.hidden(), tokens + 1});
  prefill(m, &cache);
  const std::vector<std::int32_t> id{42};
  const std::vector<index_t> pos{tokens}, indptr{0, 1};
  std::vector<float> h(H), k(H), v(H), logits(static_cast<std::size_t>(m.vocab()));
  for (auto _ : state) {
    m.embed(make_host_span(id), make_host_span(h));
    for (index_t l = 0; l < m.layers(); ++l) {
      m.layer(l, {make_host_span(indptr), make_host_span(h), m.hidden()}, make_host_span(pos),
              &cache, make_host_span(k), make_host_span(v));
    }
    m.logits(make_host_span(std::as_const(h)), make_host_span(logits));
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["cached"] = tokens;
}

}  // namespace

BENCHMARK(bm_llama_prefill)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_llama_decode_step)->Unit(benchmark::kMillisecond)->UseRealTime();
