// SPDX-License-Identifier: Apache-2.0
/// @file rms_norm.hpp
/// @brief RMSNorm over the last dimension of host fp32 rows (LLaMA's, no bias).
#pragma once

#include <dynllava/nn/parallel.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// @brief `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight`, the sum of squares in
/// double.
/// @param x [rows, weight.size()] host; @param out [rows, weight.size()] host (may alias `x`).
inline void rms_norm(const float* x, std::size_t rows, const std::vector<float>& weight, float eps,
                     float* out) {
  const std::size_t d = weight.size();
  parallel_rows(rows, d, [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* xr = x + r * d;
      double ss = 0.0;
      for (std::size_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
      float* o = out + r * d;
      for (std::size_t i = 0; i < d; ++i) o[i] = xr[i] * inv * weight[i];
    }
  });
}

}  // namespace dynllava::nn
