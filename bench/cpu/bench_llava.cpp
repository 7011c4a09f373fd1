// SPDX-License-Identifier: Apache-2.0
/// @file bench_llava.cpp
/// @brief CPU fp32 LLaVA-1.5 through the library's drivers, dense and Dynamic-LLaVA, on two
/// models: the tiny Dynamic-LLaVA fixture (tests/fixtures/llava/original, bf16, loaded with
/// `io::load_llava`) and a mid-size random model built in memory (LLaMA hidden 2048, 16 layers,
/// 16 heads, MLP 5632, vocab 32000; the real CLIP ViT-L/14-336 tower, 23 layers held; the
/// mlp2x_gelu projector; random predictors with hidden 2048; all fp32, about 5 GB).
///
/// Cases, each on one thread (argument 1) and on every hardware thread (argument 0), the count
/// set with `nn::set_thread_count`:
///   encode      one 336x336 image through the tower and the projector (576 rows out)
///   prefill     one LLaVA prompt: 35 system tokens, the image's 576 rows, 20 instruction tokens
///               (631 rows), through `kv_session::prefill` (the last row's logits included);
///               dense, and Dynamic-LLaVA (vision keep 0.2 at sparse layer 2, output gate on)
///   decode      16 `kv_session::decode` steps after that prefill (untimed), tokens/s
///   load        (tiny only) `io::load_llava`, with the process's peak RSS (VmHWM) as counters
/// Time: wall (`UseRealTime`) and the process's CPU time over all threads
/// (`MeasureProcessCPUTime`). The transformers peer is bench/torch/llava_peer.py.
///
///   ./build/cpu/bench/dynllava_bench_llava --benchmark_filter=load   (a fresh process: peak RSS)
///   ./build/cpu/bench/dynllava_bench_llava --benchmark_filter=tiny
///   ./build/cpu/bench/dynllava_bench_llava --benchmark_filter=mid
#include <dynllava/dynllava.hpp>
#include <dynllava/io/load_llava.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/score/random_weights.hpp>

#include "peak_rss.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace dynllava;
using dynllava::bench::peak_rss_bytes;

namespace {

constexpr index_t system_tokens = 35;
constexpr index_t instruction_tokens = 20;
constexpr index_t decode_steps = 16;

/// A model with its predictors (not owned: static storage).
struct bench_model {
  const llava_model& model;
  const image_predictor& image;
  const output_predictor& output;
};

io::llava_folder load_tiny() {
  return io::load_llava(std::filesystem::path(DYNLLAVA_FIXTURE_DIR) / "llava" / "original");
}

const bench_model& tiny() {
  static const io::llava_folder f = load_tiny();
  static const bench_model m{f.model, f.image.value(), f.output.value()};
  return m;
}

/// LLaVA-1.5's tower and projector with a mid-size LLaMA (a 16-layer 1.3B shape).
llava_config mid_config() {
  llava_config c;
  c.text = llama_config{2048, 16, 16, 5632, 32000};
  c.vision = clip_config{};
  c.predictors = predictor_config{.hidden = 2048};
  c.sparse.sparse_layer = 2;
  c.sparse.vision_keep_rate = 0.2;
  return c;
}

const bench_model& mid() {
  static const llava_config c = mid_config();
  static const llava_model model(c, random_llava_weights(c, 7));
  static const image_predictor image(*c.predictors,
                                     random_image_predictor_weights(*c.predictors, 11));
  static const output_predictor output(*c.predictors,
                                       random_output_predictor_weights(*c.predictors, 12));
  static const bench_model m{model, image, output};
  return m;
}

int threads_of(const benchmark::State& state) {
  const auto n = static_cast<int>(state.range(0));
  return n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::vector<float> random_pixels(const llava_model& m) {
  std::mt19937_64 g(3);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> px(m.pixels_per_image());
  for (auto& x : px) x = d(g);
  return px;
}

/// The prompt's token ids: BOS and 34 system tokens, the image placeholder, 20 instruction
/// tokens (ids fixed, inside the vocabulary).
std::vector<std::int64_t> prompt_ids(const llava_model& m) {
  std::vector<std::int64_t> ids{m.config().bos_token_id};
  const std::int64_t v = m.vocab() - 3;
  for (index_t i = 1; i < system_tokens; ++i) ids.push_back(3 + (i * 37) % v);
  ids.push_back(m.config().image_token_id);
  for (index_t i = 0; i < instruction_tokens; ++i) ids.push_back(3 + (i * 53 + 11) % v);
  return ids;
}

prompt_rows make_prompt(const llava_model& m) {
  const auto ids = prompt_ids(m);
  const auto px = random_pixels(m);
  const std::vector<index_t> indptr{0, static_cast<index_t>(ids.size())};
  return m.prompt({make_host_span(indptr), make_host_span(ids)}, make_host_span(px));
}

sparsifier_options dense_options() {
  sparsifier_options o;
  o.prune_images = false;
  o.gate_outputs = false;
  return o;
}

sparsifier_options dynamic_options(const llava_model& m) {
  sparsifier_options o;
  o.sparse_layer = m.config().sparse.sparse_layer;
  o.vision_keep_ratio = m.config().sparse.vision_keep_rate;
  o.gate_outputs = true;
  return o;
}

paged_kv_cache make_cache(const llava_model& m, const prompt_rows& p) {
  const index_t page = 16;
  const index_t pages = (p.row_indptr.back() + decode_steps) / page + 2;
  return paged_kv_cache({m.layers(), 1, m.hidden(), page, m.layers() * pages});
}

/// Runs `fn(session)` on a fresh session of the mode (`dynamic`: Dynamic-LLaVA, else dense).
template <class Fn>
void with_session(const bench_model& b, const prompt_rows& p, bool dynamic, Fn&& fn) {
  auto cache = make_cache(b.model, p);
  if (dynamic) {
    kv_session s(b.model, cache, online_gate_policy{b.model.config().sparse.sparse_layer}, &b.image,
                 &b.output, dynamic_options(b.model));
    fn(s);
  } else {
    kv_session s(b.model, cache, full_cache_policy{}, nullptr, nullptr, dense_options());
    fn(s);
  }
}

void set_counters(benchmark::State& state, int threads) { state.counters["threads"] = threads; }

void run_encode(benchmark::State& state, const bench_model& b) {
  const int threads = threads_of(state);
  nn::set_thread_count(threads);
  const auto px = random_pixels(b.model);
  std::vector<float> out(static_cast<std::size_t>(b.model.image_rows()) *
                         static_cast<std::size_t>(b.model.hidden()));
  for (auto _ : state) {
    b.model.encode_images(make_host_span(px), 1, make_host_span(out));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());  // images
  set_counters(state, threads);
}

void run_prefill(benchmark::State& state, const bench_model& b, bool dynamic) {
  const int threads = threads_of(state);
  nn::set_thread_count(threads);
  const prompt_rows p = make_prompt(b.model);
  for (auto _ : state) {
    with_session(b, p, dynamic, [&](auto& s) {
      auto logits = s.prefill(p.view(), p.segment_view());
      benchmark::DoNotOptimize(logits.data());
    });
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * p.row_indptr.back());  // prompt rows
  state.counters["rows"] = static_cast<double>(p.row_indptr.back());
  set_counters(state, threads);
}

void run_decode(benchmark::State& state, const bench_model& b, bool dynamic) {
  const int threads = threads_of(state);
  nn::set_thread_count(threads);
  const prompt_rows p = make_prompt(b.model);
  const auto v = static_cast<std::int32_t>(b.model.vocab() - 3);
  for (auto _ : state) {
    state.PauseTiming();
    with_session(b, p, dynamic, [&](auto& s) {
      (void)s.prefill(p.view(), p.segment_view());
      state.ResumeTiming();
      for (index_t i = 0; i < decode_steps; ++i) {
        const std::vector<std::int32_t> t{3 + static_cast<std::int32_t>(i * 29) % v};
        auto logits = s.decode(make_host_span(t));
        benchmark::DoNotOptimize(logits.data());
      }
      state.PauseTiming();
    });
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * decode_steps);  // tokens
  set_counters(state, threads);
}

void bm_llava_tiny_load(benchmark::State& state) {
  const double before = peak_rss_bytes();
  for (auto _ : state) {
    auto f = load_tiny();
    benchmark::DoNotOptimize(&f);
  }
  state.counters["peak_rss_before"] = before;
  state.counters["peak_rss_after"] = peak_rss_bytes();
}

void bm_llava_tiny_encode(benchmark::State& s) { run_encode(s, tiny()); }
void bm_llava_tiny_prefill_dense(benchmark::State& s) { run_prefill(s, tiny(), false); }
void bm_llava_tiny_prefill_dynamic(benchmark::State& s) { run_prefill(s, tiny(), true); }
void bm_llava_tiny_decode_dense(benchmark::State& s) { run_decode(s, tiny(), false); }
void bm_llava_tiny_decode_dynamic(benchmark::State& s) { run_decode(s, tiny(), true); }

void bm_llava_mid_encode(benchmark::State& s) {
  run_encode(s, mid());
  s.counters["peak_rss"] = peak_rss_bytes();
}
void bm_llava_mid_prefill_dense(benchmark::State& s) { run_prefill(s, mid(), false); }
void bm_llava_mid_prefill_dynamic(benchmark::State& s) { run_prefill(s, mid(), true); }
void bm_llava_mid_decode_dense(benchmark::State& s) { run_decode(s, mid(), false); }
void bm_llava_mid_decode_dynamic(benchmark::State& s) { run_decode(s, mid(), true); }

}  // namespace

BENCHMARK(bm_llava_tiny_load)->Unit(benchmark::kMillisecond)->Iterations(1);

#define DYNLLAVA_BENCH_LLAVA(fn, iters) \
  BENCHMARK(fn)                         \
      ->Unit(benchmark::kMillisecond)   \
      ->UseRealTime()                   \
      ->MeasureProcessCPUTime()         \
      ->Iterations(iters)               \
      ->Arg(1)                          \
      ->Arg(0)

DYNLLAVA_BENCH_LLAVA(bm_llava_tiny_encode, 20);
DYNLLAVA_BENCH_LLAVA(bm_llava_tiny_prefill_dense, 20);
DYNLLAVA_BENCH_LLAVA(bm_llava_tiny_prefill_dynamic, 20);
DYNLLAVA_BENCH_LLAVA(bm_llava_tiny_decode_dense, 20);
DYNLLAVA_BENCH_LLAVA(bm_llava_tiny_decode_dynamic, 20);
DYNLLAVA_BENCH_LLAVA(bm_llava_mid_encode, 2);
DYNLLAVA_BENCH_LLAVA(bm_llava_mid_prefill_dense, 2);
DYNLLAVA_BENCH_LLAVA(bm_llava_mid_prefill_dynamic, 2);
DYNLLAVA_BENCH_LLAVA(bm_llava_mid_decode_dense, 2);
DYNLLAVA_BENCH_LLAVA(bm_llava_mid_decode_dynamic, 2);
