// SPDX-License-Identifier: Apache-2.0
/// @file activations.hpp
/// @brief Elementwise activations on host fp32 values: exact GELU, quick GELU, SiLU, SwiGLU.
#pragma once

#include <dynllava/nn/exp.hpp>
#include <dynllava/nn/parallel.hpp>
#include <dynllava/nn/pointwise.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// Exact GELU `0.5 x (1 + erf(x / sqrt 2))` (`gelu_erf`, the CUDA twin's formula).
inline float gelu(float x) noexcept { return gelu_erf(x); }

/// CLIP's quick GELU `x * sigmoid(1.702 x)`.
inline float quick_gelu(float x) noexcept { return x / (1.0f + std::exp(-1.702f * x)); }

/// SiLU `x * sigmoid(x)`.
inline float silu(float x) noexcept { return x / (1.0f + std::exp(-x)); }

/// `x[i] = gelu(x[i])` for `n` values.
inline void gelu_inplace(float* x, std::size_t n) {
  parallel_chunks(n, std::size_t{1} << 14, 1, [x](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) x[i] = gelu(x[i]);
  });
}
inline void gelu_inplace(std::vector<float>& x) { gelu_inplace(x.data(), x.size()); }

namespace detail {

/// `x[i] = f(x[i], e[i], i)` with `e[i] = exp(scale * x[i])` by `exp_shifted` (vectorised), in
/// chunks of 256 values on the stack; chunks of 2^16 values spread over up to `thread_count()`
/// threads (chunk starts are multiples of 256 whatever the thread count: the same results).
template <class F>
void with_exp(float* x, std::size_t n, float scale, F f) {
  constexpr std::size_t chunk = 256;
  parallel_chunks(n, std::size_t{1} << 16, chunk, [&](std::size_t begin, std::size_t end) {
    float e[chunk];
    for (std::size_t i0 = begin; i0 < end; i0 += chunk) {
      const std::size_t c = std::min(chunk, end - i0);
      for (std::size_t i = 0; i < c; ++i) e[i] = scale * x[i0 + i];
      exp_shifted(e, c, 0.0f);
      for (std::size_t i = 0; i < c; ++i) x[i0 + i] = f(x[i0 + i], e[i], i0 + i);
    }
  });
}

}  // namespace detail

/// `x[i] = x[i] / (1 + exp(-1.702 x[i]))` (quick GELU) for `n` values, the exponential by
/// `exp_shifted` (within 2 ulp of `std::exp`).
inline void quick_gelu_inplace(float* x, std::size_t n) {
  detail::with_exp(x, n, -1.702f, [](float v, float e, std::size_t) { return v / (1.0f + e); });
}

/// SwiGLU's gating: `gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i]` (`silu(gate) * up`) for
/// `n` values, the exponential by `exp_shifted` (within 2 ulp of `std::exp`).
inline void swiglu_inplace(float* gate, const float* up, std::size_t n) {
  detail::with_exp(gate, n, -1.0f,
                   [up](float g, float e, std::size_t i) { return g / (1.0f + e) * up[i]; });
}

}  // namespace dynllava::nn
