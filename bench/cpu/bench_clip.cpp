// SPDX-License-Identifier: Apache-2.0
/// @file bench_clip.cpp
/// @brief CPU fp32 clip_vision_tower at the real CLIP ViT-L/14-336 shape, as LLaVA-1.5 runs it:
/// one 336x336 image through the patch embedding, the pre-LayerNorm and 23 of the 24 encoder
/// layers (`mm_vision_select_layer = -2`), 576 patch features of 1024 out. Random weights (the
/// 23 layers held, about 1.2 GB). The PyTorch peer bench/torch/clip_peer.py runs transformers'
/// CLIPVisionModel on the same shape.
///
/// The nn calls run on one thread (`nn::set_thread_count(1)`); run with one BLAS thread
/// (OPENBLAS_NUM_THREADS=1) and pinned, filtered to it:
///   OPENBLAS_NUM_THREADS=1 taskset -c 1 ./build/cpu/bench/dynllava_bench_cpu
///   --benchmark_filter=clip
#include <dynllava/core/clip_config.hpp>
#include <dynllava/model/clip.hpp>
#include <dynllava/model/clip_weights.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/nn/parallel.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <random>
#include <utility>
#include <vector>

using namespace dynllava;

namespace {

/// LLaVA-1.5's tower: ViT-L/14-336 with its defaults, layer -2 selected.
const llava_config& bench_config() {
  static const llava_config c = [] {
    llava_config l;
    l.vision = clip_config{};
    return l;
  }();
  return c;
}

const clip_vision_tower& bench_tower() {
  const auto& c = bench_config();
  static const clip_vision_tower t(c.vision, random_clip_weights(c.vision, 7, c.vision_layer()));
  return t;
}

void bm_clip_vit_l14_336_encode(benchmark::State& state) {
  nn::set_thread_count(1);  // the targets are single-thread (with OPENBLAS_NUM_THREADS=1)
  const auto& tower = bench_tower();
  const index_t layer = bench_config().vision_layer();
  std::mt19937_64 g(3);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> px(tower.pixels_per_image());
  for (auto& x : px) x = d(g);
  std::vector<float> out(static_cast<std::size_t>(tower.rows(vision_select_feature::patch)) *
                         static_cast<std::size_t>(tower.config().hidden));
  for (auto _ : state) {
    tower.encode(make_host_span(std::as_const(px)), 1, layer, vision_select_feature::patch,
                 make_host_span(out));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());  // images
  state.counters["layers"] = static_cast<double>(layer);
}

}  // namespace

BENCHMARK(bm_clip_vit_l14_336_encode)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
