// SPDX-License-Identifier: Apache-2.0
/// @file pipeline_world.hpp
/// @brief The pipeline tests' world: a small random LLaMA decoder (H 32, 4 layers, 4 heads),
/// random predictors whose output gate keeps some tokens and drops others, and two prompts
/// `[system 3 | image 20 | instruction 4]` and `[system 3 | image 10 | instruction 2]`.
#pragma once

#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/model/llama.hpp>
#include <dynllava/nn.hpp>
#include <dynllava/score/random_weights.hpp>

#include "../../examples/common/small_models.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace dynllava::test {

using K = segment_kind;

struct world {
  llama_config lc{32, 4, 4, 64, 50, 1e-5f, 10000.0};
  predictor_config pc;
  llama_model model;
  image_predictor image;
  output_predictor output;
  // prompts: [system 3 | image n_img | instruction n_ins]
  std::vector<std::vector<float>> prompt_rows;  // per sequence [len, H]
  std::vector<std::vector<segment>> prompt_segs;

  world()
      : pc(examples::small_predictor_config(32)),
        model(lc, random_llama_weights(lc, 1)),
        image(pc, random_image_predictor_weights(pc, 2)),
        output(examples::centred_output_predictor(pc, model, 3)) {
    std::mt19937 g(4);
    std::normal_distribution<float> normal;
    for (auto [n_img, n_ins] : {std::pair<index_t, index_t>{20, 4}, {10, 2}}) {
      std::vector<segment> s{
          {K::system, 0, 3, 0}, {K::image, 3, n_img, 0}, {K::instruction, 3 + n_img, n_ins, 0}};
      std::vector<std::int32_t> text;
      std::vector<float> rows;
      const auto H = static_cast<std::size_t>(lc.hidden);
      auto add_tokens = [&](index_t n) {
        std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
        for (auto& id : ids) id = static_cast<std::int32_t>(g() % 50);
        std::vector<float> e(ids.size() * H);
        model.embed(make_host_span(std::as_const(ids)), make_host_span(e));
        rows.insert(rows.end(), e.begin(), e.end());
      };
      add_tokens(3);
      for (index_t i = 0; i < n_img * lc.hidden; ++i) rows.push_back(normal(g));
      add_tokens(n_ins);
      prompt_rows.push_back(rows);
      prompt_segs.push_back(s);
    }
  }

  /// Packed rows + segments of the given sequences, each extended by `outputs[b]` tokens.
  struct batch_input {
    std::vector<float> rows;
    std::vector<index_t> indptr{0}, seg_indptr{0};
    std::vector<segment> segs;
    host_ragged_rows<const float> view(index_t H) const {
      return {make_host_span(indptr), make_host_span(rows), H};
    }
    segment_table<host_space> table() const {
      return {make_host_span(seg_indptr), make_host_span(segs)};
    }
  };
  batch_input input(const std::vector<std::size_t>& which,
                    const std::vector<std::vector<std::int32_t>>& outputs = {}) const {
    batch_input in;
    const auto H = static_cast<std::size_t>(lc.hidden);
    for (std::size_t j = 0; j < which.size(); ++j) {
      const auto b = which[j];
      in.rows.insert(in.rows.end(), prompt_rows[b].begin(), prompt_rows[b].end());
      auto segs = prompt_segs[b];
      index_t len = segs.back().end();
      if (!outputs.empty() && !outputs[j].empty()) {
        std::vector<float> e(outputs[j].size() * H);
        model.embed(make_host_span(outputs[j]), make_host_span(e));
        in.rows.insert(in.rows.end(), e.begin(), e.end());
        segs.push_back({K::output, len, static_cast<index_t>(outputs[j].size()), 0});
        len += static_cast<index_t>(outputs[j].size());
      }
      in.segs.insert(in.segs.end(), segs.begin(), segs.end());
      in.seg_indptr.push_back(static_cast<index_t>(in.segs.size()));
      in.indptr.push_back(in.indptr.back() + len);
    }
    return in;
  }
};

inline const world& the_world() {
  static const world w;
  return w;
}

inline paged_kv_cache make_cache(const world& w, std::size_t batch) {
  return paged_kv_cache({w.lc.layers, batch, w.lc.hidden, 4, 400});
}

/// The cost model's description of the test world (its KV cache stores fp32).
inline cost::llava_sizes cost_config_of(const world& w) {
  cost::llava_sizes cc;
  cc.name = "test";
  cc.hidden = w.lc.hidden;
  cc.layers = w.lc.layers;
  cc.heads = w.lc.heads;
  cc.head_dim = w.lc.head_dim;
  cc.intermediate = w.lc.intermediate;
  cc.vocab = w.lc.vocab;
  cc.kv_bytes_per_element = 4;
  cc.predictor = w.pc;
  return cc;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
  return d;
}

/// Dense vision and text (nothing pruned).
inline sparsifier_options dense_options() {
  sparsifier_options o;
  o.prune_images = false;
  o.gate_outputs = false;
  return o;
}

/// FastV's paper setting: K = 3, keep 25% of the image, text dense.
inline sparsifier_options fastv_options() {
  sparsifier_options o;
  o.vision = vision_rule::fastv;
  o.sparse_layer = 3;
  o.vision_keep_ratio = 0.25;
  o.gate_outputs = false;
  return o;
}

}  // namespace dynllava::test
