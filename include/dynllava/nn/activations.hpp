// SPDX-License-Identifier: Apache-2.0
/// @file activations.hpp
/// @brief Elementwise activations on host fp32 values: exact GELU, quick GELU, SiLU, SwiGLU.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// Exact GELU `0.5 x (1 + erf(x / sqrt 2))`.
inline float gelu(float x) noexcept {
  return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f));
}

/// CLIP's quick GELU `x * sigmoid(1.702 x)`.
inline float quick_gelu(float x) noexcept { return x / (1.0f + std::exp(-1.702f * x)); }

/// SiLU `x * sigmoid(x)`.
inline float silu(float x) noexcept { return x / (1.0f + std::exp(-x)); }

/// `x[i] = gelu(x[i])` for `n` values.
inline void gelu_inplace(float* x, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) x[i] = gelu(x[i]);
}
inline void gelu_inplace(std::vector<float>& x) noexcept { gelu_inplace(x.data(), x.size()); }

/// `x[i] = quick_gelu(x[i])` for `n` values.
inline void quick_gelu_inplace(float* x, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) x[i] = quick_gelu(x[i]);
}

/// SwiGLU's gating: `gate[i] = silu(gate[i]) * up[i]` for `n` values.
inline void swiglu_inplace(float* gate, const float* up, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

}  // namespace dynllava::nn
