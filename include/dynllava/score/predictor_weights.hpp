// SPDX-License-Identifier: Apache-2.0
/// @file predictor_weights.hpp
/// @brief Host fp32 weights of the two Dynamic-LLaVA predictors, and their shape checks.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/score/detail/layers.hpp>
#include <dynllava/score/predictor_config.hpp>

#include <array>
#include <limits>
#include <string>
#include <vector>

namespace dynllava {

/// One pre-LN transformer block of the image predictor (`transformer.{i}.*`).
struct transformer_block_weights {
  layer_norm_weights norm1;  ///< [d]
  linear_weights qkv;        ///< [3d, d], no bias, rows [q; k; v]
  linear_weights proj;       ///< [d, d] + [d]
  layer_norm_weights norm2;  ///< [d]
  linear_weights fc1;        ///< [ffn, d] + [ffn]
  linear_weights fc2;        ///< [d, ffn] + [d]
};

/// `model.image_score_predictor.*`.
struct image_predictor_weights {
  layer_norm_weights down_norm;                   ///< down_mlp.0: [H]
  linear_weights down;                            ///< down_mlp.1: [d, H] + [d]
  std::vector<transformer_block_weights> blocks;  ///< transformer.{0..}
  std::array<linear_weights, 3> head;             ///< output_mlp.{0,2,4}: d -> h0 -> h1 -> 2
};

/// `model.output_text_score_predictor.*`.
struct output_predictor_weights {
  layer_norm_weights norm;             ///< output_mlp.0: [H]
  std::array<linear_weights, 4> head;  ///< output_mlp.{1,3,5,7}: H -> o0 -> o1 -> o2 -> 2
};

namespace detail {

inline void check_size(const std::vector<float>& v, index_t expected, const std::string& what) {
  DYNLLAVA_EXPECTS(v.size() == static_cast<std::size_t>(expected),
                   "predictor weights: {} must have {} elements, got {}", what, expected, v.size());
}

inline void check(const layer_norm_weights& w, index_t dim, const std::string& what) {
  check_size(w.gamma, dim, what + ".weight");
  check_size(w.beta, dim, what + ".bias");
}

inline void check(const linear_weights& w, index_t in, index_t out, bool bias,
                  const std::string& what) {
  DYNLLAVA_EXPECTS(w.in == in && w.out == out,
                   "predictor weights: {} must map {} -> {} features, got {} -> {}", what, in, out,
                   w.in, w.out);
  DYNLLAVA_EXPECTS(static_cast<long long>(in) * out <= std::numeric_limits<index_t>::max(),
                   "predictor weights: {} ({} x {}) is too large", what, out, in);
  check_size(w.weight, in * out, what + ".weight");
  check_size(w.bias, bias ? out : 0, what + ".bias");
}

}  // namespace detail

/// @throws dynllava::error naming the first tensor whose size disagrees with `c`.
inline void validate(const image_predictor_weights& w, const predictor_config& c) {
  c.validate();
  const index_t d = c.d_model;
  detail::check(w.down_norm, c.hidden, "down_mlp.0");
  detail::check(w.down, c.hidden, d, true, "down_mlp.1");
  DYNLLAVA_EXPECTS(w.blocks.size() == static_cast<std::size_t>(c.blocks),
                   "predictor weights: expected {} transformer blocks, got {}", c.blocks,
                   w.blocks.size());
  for (std::size_t i = 0; i < w.blocks.size(); ++i) {
    const auto p = "transformer." + std::to_string(i);
    const auto& b = w.blocks[i];
    detail::check(b.norm1, d, p + ".norm1");
    detail::check(b.qkv, d, 3 * d, false, p + ".attn.qkv");
    detail::check(b.proj, d, d, true, p + ".attn.proj");
    detail::check(b.norm2, d, p + ".norm2");
    detail::check(b.fc1, d, c.ffn, true, p + ".mlp.fc1");
    detail::check(b.fc2, c.ffn, d, true, p + ".mlp.fc2");
  }
  detail::check(w.head[0], d, c.image_head[0], true, "output_mlp.0");
  detail::check(w.head[1], c.image_head[0], c.image_head[1], true, "output_mlp.2");
  detail::check(w.head[2], c.image_head[1], 2, true, "output_mlp.4");
}

/// @throws dynllava::error naming the first tensor whose size disagrees with `c`.
inline void validate(const output_predictor_weights& w, const predictor_config& c) {
  c.validate();
  detail::check(w.norm, c.hidden, "output_mlp.0");
  const std::array<index_t, 5> dims{c.hidden, c.output_head[0], c.output_head[1],
                                    c.output_head[2], 2};
  for (std::size_t i = 0; i < 4; ++i) {
    detail::check(w.head[i], dims[i], dims[i + 1], true, "output_mlp." + std::to_string(2 * i + 1));
  }
}

}  // namespace dynllava
