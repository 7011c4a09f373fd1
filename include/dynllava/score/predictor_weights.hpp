// SPDX-License-Identifier: Apache-2.0
/// @file predictor_weights.hpp
/// @brief Host fp32 weights of the two Dynamic-LLaVA predictors and their tensor tables, from
/// which validation, loading (load_predictors.hpp) and random init (random_weights.hpp) derive.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <array>
#include <string>
#include <vector>

namespace dynllava {

/// One pre-LN transformer block of the image predictor (`transformer.{i}.*`).
struct transformer_block_weights {
  nn::layer_norm_weights norm1;  ///< [d]
  nn::linear_weights qkv;        ///< [3d, d], no bias, rows [q; k; v]
  nn::linear_weights proj;       ///< [d, d] + [d]
  nn::layer_norm_weights norm2;  ///< [d]
  nn::linear_weights fc1;        ///< [ffn, d] + [ffn]
  nn::linear_weights fc2;        ///< [d, ffn] + [d]
};

/// `model.image_score_predictor.*`.
struct image_predictor_weights {
  nn::layer_norm_weights down_norm;               ///< down_mlp.0: [H]
  nn::linear_weights down;                        ///< down_mlp.1: [d, H] + [d]
  std::vector<transformer_block_weights> blocks;  ///< transformer.{0..}
  std::array<nn::linear_weights, 3> head;         ///< output_mlp.{0,2,4}: d -> h0 -> h1 -> 2
};

/// `model.output_text_score_predictor.*`.
struct output_predictor_weights {
  nn::layer_norm_weights norm;             ///< output_mlp.0: [H]
  std::array<nn::linear_weights, 4> head;  ///< output_mlp.{1,3,5,7}: H -> o0 -> o1 -> o2 -> 2
};

/// @brief The image predictor's tensor table: announces every tensor of `w` (names relative to
/// `model.image_score_predictor.`, shapes from `c`) to `f(const nn::tensor_spec&, vector&)`,
/// in checkpoint order. Mutable `w` is shaped by `c`; const `w` is checked against it.
template <nn::maybe_const<image_predictor_weights> W, class F>
void visit_tensors(W& w, const predictor_config& c, F&& f) {
  const index_t d = c.d_model;
  nn::visit_layer_norm(w.down_norm, "down_mlp.0", c.hidden, f);
  nn::visit_linear(w.down, "down_mlp.1", c.hidden, d, true, f);
  nn::expect_count(w.blocks, c.blocks, "image predictor weights: transformer blocks");
  for (std::size_t i = 0; i < w.blocks.size(); ++i) {
    const std::string p = "transformer." + std::to_string(i);
    auto& b = w.blocks[i];
    nn::visit_layer_norm(b.norm1, p + ".norm1", d, f);
    nn::visit_linear(b.qkv, p + ".attn.qkv", d, 3 * d, false, f);
    nn::visit_linear(b.proj, p + ".attn.proj", d, d, true, f);
    nn::visit_layer_norm(b.norm2, p + ".norm2", d, f);
    nn::visit_linear(b.fc1, p + ".mlp.fc1", d, c.ffn, true, f);
    nn::visit_linear(b.fc2, p + ".mlp.fc2", c.ffn, d, true, f);
  }
  nn::visit_linear(w.head[0], "output_mlp.0", d, c.image_head[0], true, f);
  nn::visit_linear(w.head[1], "output_mlp.2", c.image_head[0], c.image_head[1], true, f);
  nn::visit_linear(w.head[2], "output_mlp.4", c.image_head[1], 2, true, f);
}

/// @brief The output predictor's tensor table (names relative to
/// `model.output_text_score_predictor.`); see the image predictor's.
template <nn::maybe_const<output_predictor_weights> W, class F>
void visit_tensors(W& w, const predictor_config& c, F&& f) {
  nn::visit_layer_norm(w.norm, "output_mlp.0", c.hidden, f);
  const std::array<index_t, 5> dims{c.hidden, c.output_head[0], c.output_head[1], c.output_head[2],
                                    2};
  for (std::size_t i = 0; i < 4; ++i) {
    nn::visit_linear(w.head[i], "output_mlp." + std::to_string(2 * i + 1), dims[i], dims[i + 1],
                     true, f);
  }
}

/// @throws dynllava::error naming the first tensor whose size disagrees with `c`.
inline void validate(const image_predictor_weights& w, const predictor_config& c) {
  c.validate();
  visit_tensors(w, c, nn::size_checker{"image predictor weights"});
}

/// @throws dynllava::error naming the first tensor whose size disagrees with `c`.
inline void validate(const output_predictor_weights& w, const predictor_config& c) {
  c.validate();
  visit_tensors(w, c, nn::size_checker{"output predictor weights"});
}

}  // namespace dynllava
