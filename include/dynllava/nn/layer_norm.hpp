// SPDX-License-Identifier: Apache-2.0
/// @file layer_norm.hpp
/// @brief Affine LayerNorm over the last dimension of host fp32 rows (biased variance).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/nn/parallel.hpp>
#include <dynllava/nn/pointwise.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// Owned host LayerNorm parameters: `gamma`, `beta` of `[dim]`.
struct layer_norm_weights {
  std::vector<float> gamma;
  std::vector<float> beta;
  index_t dim() const noexcept { return static_cast<index_t>(gamma.size()); }
};

/// @brief `out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta`, statistics in double.
/// @param x [rows, w.dim()] host; @param out [rows, w.dim()] host (may alias `x`).
inline void layer_norm(const float* x, std::size_t rows, const layer_norm_weights& w, float eps,
                       float* out) {
  const auto d = static_cast<std::size_t>(w.dim());
  parallel_rows(rows, d, [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
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
      for (std::size_t i = 0; i < d; ++i)
        o[i] = layer_norm_value(xr[i], m, inv, w.gamma[i], w.beta[i]);
    }
  });
}

}  // namespace dynllava::nn
