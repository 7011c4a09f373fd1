// SPDX-License-Identifier: Apache-2.0
/// @file linear.hpp
/// @brief A Linear layer `y = x W^T (+ b)` on host fp32 rows, one SGEMM (SGEMV for one row).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/nn/blas.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// Owned host weights of `y = x W^T + b`: `weight [out, in]` row-major (the checkpoints'
/// layout), `bias [out]` or empty for none.
struct linear_weights {
  std::vector<float> weight;
  std::vector<float> bias;
  index_t in = 0;
  index_t out = 0;
};

/// @brief `out[r, :] = x[r, :] W^T + b` for `rows` rows.
/// @param x [rows, w.in] host, row-major; @param out [rows, w.out] host; must not alias `x`.
inline void linear(const float* x, std::size_t rows, const linear_weights& w, float* out) {
  if (rows == 0) return;
  const auto in = static_cast<std::size_t>(w.in);
  const auto n_out = static_cast<std::size_t>(w.out);
  const bool bias = !w.bias.empty();
  if (bias) {
    for (std::size_t r = 0; r < rows; ++r) std::copy(w.bias.begin(), w.bias.end(), out + r * n_out);
  }
  const float beta = bias ? 1.0f : 0.0f;
  if (rows == 1) {
    if (!bias) std::fill(out, out + n_out, 0.0f);  // never scale what was not written
    cblas_sgemv(CblasRowMajor, CblasNoTrans, w.out, w.in, 1.0f, w.weight.data(), w.in, x, 1, beta,
                out, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), w.out, w.in, 1.0f, x,
              static_cast<int>(in), w.weight.data(), w.in, beta, out, w.out);
}

/// `linear` into a new `[rows, w.out]` vector.
inline std::vector<float> linear(const std::vector<float>& x, std::size_t rows,
                                 const linear_weights& w) {
  DYNLLAVA_EXPECTS(x.size() == rows * static_cast<std::size_t>(w.in),
                   "linear: x must hold rows * in = {} values, got {}",
                   rows * static_cast<std::size_t>(w.in), x.size());
  std::vector<float> out(rows * static_cast<std::size_t>(w.out));
  linear(x.data(), rows, w, out.data());
  return out;
}

}  // namespace dynllava::nn
