// SPDX-License-Identifier: Apache-2.0
/// @file random_weights.hpp
/// @brief Seeded random predictor weights (uniform +-1/sqrt(fan_in), LayerNorms near identity)
/// for tests, examples and benchmarks that need the architecture but not a trained checkpoint.
#pragma once

#include <dynllava/score/predictor_config.hpp>
#include <dynllava/score/predictor_weights.hpp>

#include <cmath>
#include <cstdint>
#include <random>

namespace dynllava {

namespace detail {
struct weight_maker {
  std::mt19937_64 g;
  linear_weights linear(index_t in, index_t out, bool bias) {
    const float k = 1.0f / std::sqrt(static_cast<float>(in));
    std::uniform_real_distribution<float> u(-k, k);
    linear_weights w;
    w.in = in;
    w.out = out;
    w.weight.resize(static_cast<std::size_t>(in) * static_cast<std::size_t>(out));
    for (auto& x : w.weight) x = u(g);
    if (bias) {
      w.bias.resize(static_cast<std::size_t>(out));
      for (auto& x : w.bias) x = u(g);
    }
    return w;
  }
  layer_norm_weights norm(index_t n) {
    std::normal_distribution<float> d(0.0f, 0.1f);
    layer_norm_weights w;
    w.gamma.resize(static_cast<std::size_t>(n));
    w.beta.resize(static_cast<std::size_t>(n));
    for (auto& x : w.gamma) x = 1.0f + d(g);
    for (auto& x : w.beta) x = d(g);
    return w;
  }
};
}  // namespace detail

/// Random image-predictor weights shaped by `c`.
inline image_predictor_weights random_image_predictor_weights(const predictor_config& c,
                                                              std::uint64_t seed) {
  c.validate();
  detail::weight_maker m{std::mt19937_64(seed)};
  image_predictor_weights w;
  w.down_norm = m.norm(c.hidden);
  w.down = m.linear(c.hidden, c.d_model, true);
  for (index_t i = 0; i < c.blocks; ++i) {
    transformer_block_weights b;
    b.norm1 = m.norm(c.d_model);
    b.qkv = m.linear(c.d_model, 3 * c.d_model, false);
    b.proj = m.linear(c.d_model, c.d_model, true);
    b.norm2 = m.norm(c.d_model);
    b.fc1 = m.linear(c.d_model, c.ffn, true);
    b.fc2 = m.linear(c.ffn, c.d_model, true);
    w.blocks.push_back(std::move(b));
  }
  w.head[0] = m.linear(c.d_model, c.image_head[0], true);
  w.head[1] = m.linear(c.image_head[0], c.image_head[1], true);
  w.head[2] = m.linear(c.image_head[1], 2, true);
  return w;
}

/// Random output-predictor weights shaped by `c`.
inline output_predictor_weights random_output_predictor_weights(const predictor_config& c,
                                                                std::uint64_t seed) {
  c.validate();
  detail::weight_maker m{std::mt19937_64(seed)};
  output_predictor_weights w;
  w.norm = m.norm(c.hidden);
  const index_t dims[5] = {c.hidden, c.output_head[0], c.output_head[1], c.output_head[2], 2};
  for (std::size_t i = 0; i < 4; ++i) w.head[i] = m.linear(dims[i], dims[i + 1], true);
  return w;
}

}  // namespace dynllava
