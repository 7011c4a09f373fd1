// SPDX-License-Identifier: Apache-2.0
/// @file random_weights.hpp
/// @brief Seeded random predictor weights (uniform +-1/sqrt(fan_in), LayerNorms near identity)
/// for tests, examples and benchmarks that need the architecture but not a trained checkpoint.
/// Drawn in the tensor tables' order (predictor_weights.hpp), so a seed always gives the same
/// weights.
#pragma once

#include <dynllava/core/predictor_config.hpp>
#include <dynllava/nn/tensor_table.hpp>
#include <dynllava/score/predictor_weights.hpp>

#include <cstdint>
#include <random>

namespace dynllava {

/// Random image-predictor weights shaped by `c`.
inline image_predictor_weights random_image_predictor_weights(const predictor_config& c,
                                                              std::uint64_t seed) {
  c.validate();
  image_predictor_weights w;
  visit_tensors(w, c, nn::random_filler{std::mt19937_64(seed)});
  return w;
}

/// Random output-predictor weights shaped by `c`.
inline output_predictor_weights random_output_predictor_weights(const predictor_config& c,
                                                                std::uint64_t seed) {
  c.validate();
  output_predictor_weights w;
  visit_tensors(w, c, nn::random_filler{std::mt19937_64(seed)});
  return w;
}

}  // namespace dynllava
