// SPDX-License-Identifier: Apache-2.0
/// @file linear.hpp
/// @brief A Linear layer `y = x W^T (+ b)` on host fp32 rows: one SGEMM (SGEMV for one row) over
/// fp32 weights; fp16/bf16 weights are widened block by block (rows of W) into a per-thread
/// buffer and multiplied block by block.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/stored_matrix.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// Host weights of `y = x W^T + b`: `weight [out, in]` row-major (the checkpoints' layout) in its
/// stored width, `bias [out]` fp32 or empty for none.
struct linear_weights {
  stored_matrix weight;
  std::vector<float> bias;
  index_t in = 0;
  index_t out = 0;
};

namespace detail {

/// `out[r, o] (+)= x[r, :] . W[o, :]` for fp32 `W [n_out, in]` with leading dimension `in`;
/// `ldo` is the leading dimension of `out`; `beta` 0 overwrites, 1 accumulates.
inline void gemm_rows(const float* x, std::size_t rows, const float* W, index_t n_out, index_t in,
                      float beta, float* out, index_t ldo) {
  if (rows == 1) {
    if (beta == 0.0f) std::fill(out, out + n_out, 0.0f);  // never scale what was not written
    const auto threads =
        blas_gemv_scope(static_cast<std::size_t>(n_out), static_cast<std::size_t>(in));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, in, 1.0f, W, in, x, 1, beta, out, 1);
    return;
  }
  const auto threads =
      blas_gemm_scope(rows, static_cast<std::size_t>(n_out), static_cast<std::size_t>(in));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), n_out, in, 1.0f, x,
              in, W, in, beta, out, ldo);
}

}  // namespace detail

/// @brief `out[r, :] = x[r, :] W^T + b` for `rows` rows.
/// @param x [rows, w.in] host, row-major; @param out [rows, w.out] host; must not alias `x`.
/// fp16/bf16 weights are widened in blocks of rows into a buffer that each thread keeps (it
/// grows to at most 1 Mi floats once, then is reused).
inline void linear(const float* x, std::size_t rows, const linear_weights& w, float* out) {
  if (rows == 0) return;
  const auto n_out = static_cast<std::size_t>(w.out);
  const bool bias = !w.bias.empty();
  if (bias) {
    for (std::size_t r = 0; r < rows; ++r) std::copy(w.bias.begin(), w.bias.end(), out + r * n_out);
  }
  const float beta = bias ? 1.0f : 0.0f;
  if (const float* W = w.weight.f32()) {
    detail::gemm_rows(x, rows, W, w.out, w.in, beta, out, w.out);
    return;
  }
  // Rows of W per block: about 64 Ki floats for a GEMV (bandwidth-bound: stay in cache), 1 Mi
  // for a GEMM (wide enough for the BLAS kernels).
  const std::size_t target = rows == 1 ? (std::size_t{1} << 16) : (std::size_t{1} << 20);
  const auto in = static_cast<std::size_t>(w.in);
  const std::size_t block = std::clamp<std::size_t>(target / std::max<std::size_t>(in, 1), 1,
                                                    std::max<std::size_t>(n_out, 1));
  thread_local std::vector<float> widened;
  if (widened.size() < block * in) widened.resize(block * in);
  for (std::size_t o = 0; o < n_out; o += block) {
    const std::size_t nb = std::min(block, n_out - o);
    w.weight.widen_rows(static_cast<index_t>(o), static_cast<index_t>(nb), widened.data());
    if (rows == 1) {
      detail::gemm_rows(x, 1, widened.data(), static_cast<index_t>(nb), w.in, beta, out + o,
                        static_cast<index_t>(nb));
    } else {
      detail::gemm_rows(x, rows, widened.data(), static_cast<index_t>(nb), w.in, beta, out + o,
                        w.out);
    }
  }
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
