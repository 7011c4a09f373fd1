// SPDX-License-Identifier: Apache-2.0
/// @file engine_hooks.cpp
/// @brief An engine that keeps its own layer loop and its own KV cache, and calls dynllava only
/// at the sparse layer (DESIGN.md section 5, way 1; docs/integration.md):
///
///  prefill: layers < l on every row -> `cpu::prune_prefill` (image predictor, top-k per turn,
///           sparse context) -> gather the kept rows -> layers >= l on them, original positions
///  decode:  layers < l -> `cpu::gate_new_tokens` (output predictor, logit0 > logit1) -> layers
///           >= l, the token attends to the cache and itself, its K/V appended only if kept
///
/// It runs a small random LLaMA decoder (the reference `llama_model`) with random predictors,
/// and checks itself against dynllava's own driver (`kv_session`): same logits, bit for bit.
///
/// Usage: dynllava_engine_hooks [STEPS]
#include <dynllava/nn.hpp>

#include "../common/small_models.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace engine_hooks {

using namespace dynllava;

/// The engine: a model, a cache, the two predictors; decode state is one position per sequence.
struct engine {
  const llama_model& model;
  const image_predictor& image;
  const output_predictor& output;
  paged_kv_cache& cache;
  index_t sparse_layer = 2;
  double image_keep = 0.2;
  std::vector<index_t> next_position = std::vector<index_t>(cache.batch(), 0);

  /// One layer on `rows` (ragged by `indptr`) at `positions`; K/V appended where `keep` says
  /// (layers below the sparse layer are given keep = 1 for every row).
  void layer(index_t l, const std::vector<index_t>& indptr, std::vector<float>& rows,
             const std::vector<index_t>& positions, const std::vector<std::uint8_t>& keep) {
    const index_t H = model.hidden();
    std::vector<float> k(rows.size()), v(rows.size());
    model.layer(l, {make_host_span(indptr), make_host_span(rows), H}, make_host_span(positions),
                &cache, make_host_span(k), make_host_span(v));
    cpu::gated_append(cache, online_gate_policy{sparse_layer}, l, make_host_span(indptr),
                      make_host_span(std::as_const(k)), make_host_span(std::as_const(v)),
                      make_host_span(keep), make_host_span(positions));
  }

  /// Logits of each sequence's last row.
  std::vector<float> last_logits(const std::vector<index_t>& indptr,
                                 const std::vector<float>& rows) const {
    const auto H = static_cast<std::size_t>(model.hidden());
    std::vector<float> last, out;
    for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
      const auto r = static_cast<std::size_t>(indptr[b + 1] - 1);
      last.insert(last.end(), rows.begin() + static_cast<std::ptrdiff_t>(r * H),
                  rows.begin() + static_cast<std::ptrdiff_t>((r + 1) * H));
    }
    out.resize(
        indptr.size() - 1 == 0 ? 0 : (indptr.size() - 1) * static_cast<std::size_t>(model.vocab()));
    model.logits(make_host_span(std::as_const(last)), make_host_span(out));
    return out;
  }

  /// The prompts: `rows` `[rows, H]` packed per sequence as `segments` describes them.
  std::vector<float> prefill(std::vector<float> rows, segment_table<host_space> segments,
                             host_selection* image_kept = nullptr) {
    const index_t H = model.hidden();
    std::vector<index_t> indptr{0}, positions;
    for (std::size_t b = 0; b < segments.batch(); ++b) {
      indptr.push_back(indptr.back() + segments.length(b));
      for (index_t i = 0; i < segments.length(b); ++i) positions.push_back(next_position[b] + i);
    }
    for (index_t l = 0; l < sparse_layer; ++l) {
      layer(l, indptr, rows, positions, std::vector<std::uint8_t>(positions.size(), 1));
    }
    // example-begin engine-hooks-prefill
    // at the sparse layer: which image tokens stay, and the context that layers >= l run on
    const auto ctx = cpu::prune_prefill(
        image, make_host_span(std::as_const(rows)), segments, image_keep, image_kept,
        {.position_offsets = make_host_span(std::as_const(next_position))});
    std::vector<float> kept(ctx.rows.size() * static_cast<std::size_t>(H));
    cpu::gather_rows(make_host_span(std::as_const(rows)), H, make_host_span(ctx.rows),
                     make_host_span(kept));
    for (index_t l = sparse_layer; l < model.layers();
         ++l) {  // original positions, never renumbered
      layer(l, ctx.indptr, kept, ctx.positions, std::vector<std::uint8_t>(ctx.rows.size(), 1));
    }
    // example-end
    for (std::size_t b = 0; b < segments.batch(); ++b) next_position[b] += segments.length(b);
    return last_logits(ctx.indptr, kept);
  }

  /// One step: `tokens[b]` is sequence `b`'s newest token; `keep` receives the gate's decisions.
  std::vector<float> decode(const std::vector<std::int32_t>& tokens,
                            std::vector<std::uint8_t>& keep) {
    const index_t H = model.hidden();
    const std::size_t n = tokens.size();
    std::vector<float> rows(n * static_cast<std::size_t>(H));
    model.embed(make_host_span(tokens), make_host_span(rows));
    std::vector<index_t> indptr(n + 1), positions(n);
    for (std::size_t b = 0; b < n; ++b) {
      indptr[b + 1] = static_cast<index_t>(b + 1);
      positions[b] = next_position[b]++;
    }
    const std::vector<std::uint8_t> all(n, 1);
    for (index_t l = 0; l < sparse_layer; ++l) layer(l, indptr, rows, positions, all);
    // example-begin engine-hooks-decode
    // at the sparse layer: does each new token's K/V enter the layers >= l?
    keep.assign(n, 0);
    cpu::gate_new_tokens(
        output, {make_host_span(std::as_const(indptr)), make_host_span(std::as_const(rows)), H},
        make_host_span(keep));
    // it attends to the cache and itself either way; gated_append caches it only if kept
    for (index_t l = sparse_layer; l < model.layers(); ++l) layer(l, indptr, rows, positions, keep);
    // example-end
    return last_logits(indptr, rows);
  }
};

/// A small world: a 4-layer LLaMA (H 32), random predictors, two prompts with an image each.
struct world {
  llama_config config{32, 4, 4, 64, 50, 1e-5f, 10000.0};
  predictor_config pc = examples::small_predictor_config(32);
  llama_model model{config, random_llama_weights(config, 11)};
  image_predictor image{pc, random_image_predictor_weights(pc, 12)};
  output_predictor output{examples::centred_output_predictor(pc, model, 13)};
  std::vector<index_t> seg_indptr{0, 3, 6};
  std::vector<segment> segs{
      {segment_kind::system, 0, 3, 0},       {segment_kind::image, 3, 20, 0},
      {segment_kind::instruction, 23, 4, 0}, {segment_kind::system, 0, 3, 0},
      {segment_kind::image, 3, 10, 0},       {segment_kind::instruction, 13, 2, 0}};
  std::vector<float> rows;  // [27 + 15, H]: embedded text, random "vision" rows

  world() {
    const std::vector<std::int32_t> ids{1, 2, 3, 4, 5, 6, 7};
    const auto H = static_cast<std::size_t>(config.hidden);
    std::vector<float> e(ids.size() * H);
    model.embed(make_host_span(ids), make_host_span(e));
    auto text = [&](std::size_t first, std::size_t n) {
      rows.insert(rows.end(), e.begin() + static_cast<std::ptrdiff_t>(first * H),
                  e.begin() + static_cast<std::ptrdiff_t>((first + n) * H));
    };
    auto vision = [&](std::size_t n, float scale) {
      for (std::size_t i = 0; i < n * H; ++i)
        rows.push_back(scale * static_cast<float>((i * 7919) % 23) / 23.0f - 0.5f);
    };
    text(0, 3), vision(20, 1.0f), text(3, 4), text(0, 3), vision(10, 0.7f), text(5, 2);
  }
  segment_table<host_space> table() const {
    return {make_host_span(seg_indptr), make_host_span(segs)};
  }
};

}  // namespace engine_hooks

#if defined(DYNLLAVA_ENGINE_HOOKS_AS_TEST)
#include <doctest/doctest.h>
TEST_SUITE("cpu") {
  TEST_CASE(
      "engine hooks: an engine's own loop with the hooks equals dynllava's driver bit for bit") {
    using namespace dynllava;
    const engine_hooks::world w;
    paged_kv_cache mine({w.config.layers, 2, w.config.hidden, 4, 200}),
        theirs({w.config.layers, 2, w.config.hidden, 4, 200});
    engine_hooks::engine e{w.model, w.image, w.output, mine};
    kv_session driver(w.model, theirs, online_gate_policy{2}, &w.image, &w.output, {});
    const std::vector<index_t> row_indptr{0, 27, 42};
    host_selection kept;
    auto a = e.prefill(w.rows, w.table(), &kept);
    auto b = driver.prefill({make_host_span(row_indptr), make_host_span(w.rows), w.config.hidden},
                            w.table());
    CHECK(a == b);
    CHECK(kept.positions == driver.image_kept().positions);
    std::vector<std::uint8_t> keep, all_keeps;
    for (int step = 0; step < 6; ++step) {
      const auto next = engine_hooks::greedy_tokens(a, w.config.vocab);
      a = e.decode(next, keep);
      b = driver.decode(make_host_span(next));
      CHECK(a == b);
      all_keeps.insert(all_keeps.end(), keep.begin(), keep.end());
    }
    CHECK(all_keeps == driver.decisions());
    for (index_t l = 0; l < w.config.layers; ++l) {
      for (std::size_t s = 0; s < 2; ++s) {
        REQUIRE(mine.length(l, s) == theirs.length(l, s));
        for (index_t i = 0; i < mine.length(l, s); ++i)
          CHECK(mine.position(l, s, i) == theirs.position(l, s, i));
      }
    }
  }
}
#else
int main(int argc, char** argv) try {
  using namespace dynllava;
  const int steps = argc > 1 ? std::stoi(argv[1]) : 8;
  const engine_hooks::world w;
  paged_kv_cache cache({w.config.layers, 2, w.config.hidden, 4, 400});
  engine_hooks::engine e{w.model, w.image, w.output, cache};
  host_selection kept;
  auto logits = e.prefill(w.rows, w.table(), &kept);
  for (std::size_t b = 0; b < 2; ++b) {
    fmt::print("sequence {}: image tokens kept {} of {}\n", b, kept.indptr[b + 1] - kept.indptr[b],
               b == 0 ? 20 : 10);
  }
  std::vector<std::uint8_t> keep;
  for (int step = 0; step < steps; ++step) {
    const auto next = engine_hooks::greedy_tokens(logits, w.config.vocab);
    logits = e.decode(next, keep);
    fmt::print("step {}: tokens {} {} kept {} {}\n", step, next[0], next[1], keep[0], keep[1]);
  }
  for (index_t l = 0; l < w.config.layers; ++l) {
    fmt::print("layer {}: cached {} and {} tokens\n", l, cache.length(l, 0), cache.length(l, 1));
  }
  return 0;
} catch (const std::exception& ex) {
  fmt::print(stderr, "{}\n", ex.what());
  return 2;
}
#endif
