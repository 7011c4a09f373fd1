// SPDX-License-Identifier: Apache-2.0
/// @file layers.hpp
/// @brief fp32 CPU building blocks of the predictors: LayerNorm, Linear, exact GELU, softmax
/// attention. Row-major `[rows, width]` host buffers throughout.
#pragma once

#include <dynllava/core/config.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava {

/// An affine LayerNorm's parameters: `gamma`, `beta` of `[dim]`.
struct layer_norm_weights {
  std::vector<float> gamma;
  std::vector<float> beta;
  index_t dim() const noexcept { return static_cast<index_t>(gamma.size()); }
};

/// A Linear layer `y = x W^T + b`: `weight [out, in]` row-major, `bias [out]` (empty: no bias).
struct linear_weights {
  std::vector<float> weight;
  std::vector<float> bias;
  index_t in = 0;
  index_t out = 0;
};

namespace detail {

/// Exact (erf) GELU.
inline float gelu(float x) noexcept {
  return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f));
}

inline void gelu_inplace(std::vector<float>& x) noexcept {
  for (float& v : x) v = gelu(v);
}

/// `out[r, :] = LayerNorm(x[r, :])` over `rows` rows of `w.dim()` elements (biased variance).
inline void layer_norm(const float* x, std::size_t rows, const layer_norm_weights& w, float eps,
                       float* out) {
  const auto d = static_cast<std::size_t>(w.dim());
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    double mean = 0.0;
    for (std::size_t i = 0; i < d; ++i) mean += xr[i];
    mean /= static_cast<double>(d);
    double var = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
      const double c = xr[i] - mean;
      var += c * c;
    }
    var /= static_cast<double>(d);
    const auto inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
    const auto m = static_cast<float>(mean);
    float* o = out + r * d;
    for (std::size_t i = 0; i < d; ++i) o[i] = (xr[i] - m) * inv * w.gamma[i] + w.beta[i];
  }
}

/// Dot product with 8 independent partial sums (vectorisable, deterministic order).
inline float dot(const float* a, const float* b, std::size_t n) noexcept {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (std::size_t j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) acc[i % 8] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// `out[r, :] = x[r, :] W^T + b` for `rows` rows; `out` is `[rows, w.out]`.
inline void linear(const float* x, std::size_t rows, const linear_weights& w, float* out) {
  const auto in = static_cast<std::size_t>(w.in);
  const auto n_out = static_cast<std::size_t>(w.out);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * in;
    float* o = out + r * n_out;
    for (std::size_t j = 0; j < n_out; ++j) {
      o[j] = dot(xr, w.weight.data() + j * in, in) + (w.bias.empty() ? 0.0f : w.bias[j]);
    }
  }
}

/// Convenience: `linear` into a new vector.
inline std::vector<float> linear(const std::vector<float>& x, std::size_t rows,
                                 const linear_weights& w) {
  std::vector<float> out(rows * static_cast<std::size_t>(w.out));
  linear(x.data(), rows, w, out.data());
  return out;
}

/// @brief Bidirectional multi-head attention over `n` tokens (no mask).
/// @param qkv [n, 3 * d] rows packed as [q | k | v], each `heads` x `d / heads`, head-major
/// @param out [n, d] concatenated head outputs
inline void attention(const float* qkv, std::size_t n, std::size_t d, std::size_t heads,
                      float* out) {
  const std::size_t hd = d / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> p(n);
  for (std::size_t h = 0; h < heads; ++h) {
    for (std::size_t i = 0; i < n; ++i) {
      const float* q = qkv + i * 3 * d + h * hd;
      float mx = -INFINITY;
      for (std::size_t j = 0; j < n; ++j) {
        p[j] = dot(q, qkv + j * 3 * d + d + h * hd, hd) * scale;
        mx = std::max(mx, p[j]);
      }
      float sum = 0.0f;
      for (std::size_t j = 0; j < n; ++j) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      float* o = out + i * d + h * hd;
      std::fill(o, o + hd, 0.0f);
      for (std::size_t j = 0; j < n; ++j) {
        const float* v = qkv + j * 3 * d + 2 * d + h * hd;
        const float a = p[j] / sum;
        for (std::size_t c = 0; c < hd; ++c) o[c] += a * v[c];
      }
    }
  }
}

}  // namespace detail
}  // namespace dynllava
