// SPDX-License-Identifier: Apache-2.0
/// @file linear.hpp
/// @brief A Linear layer `y = x W^T (+ b)` on host fp32 rows: SGEMMs (SGEMVs for one row) over
/// pieces of the output columns, spread over threads; fp16/bf16 weights are widened piece by
/// piece (rows of W) into a per-thread buffer.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/parallel.hpp>
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

/// `out[r, o] (+)= x[r, :] . W[o, :]` for fp32 `W [n_out, in]` with leading dimension `in`, on
/// the calling thread; `ldo` is the leading dimension of `out`; `beta` 0 overwrites, 1
/// accumulates.
inline void gemm_rows(const float* x, std::size_t rows, const float* W, index_t n_out, index_t in,
                      float beta, float* out, index_t ldo) {
  hold_blas_to_one_thread();
  if (rows == 1) {
    if (beta == 0.0f) std::fill(out, out + n_out, 0.0f);  // never scale what was not written
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, in, 1.0f, W, in, x, 1, beta, out, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), n_out, in, 1.0f, x,
              in, W, in, beta, out, ldo);
}

/// Output columns (rows of W) are split at multiples of this many, so that every piece but the
/// last is a whole number of the BLAS kernels' column tiles.
inline constexpr std::size_t linear_column_align = 64;

}  // namespace detail

/// @brief `out[r, :] = x[r, :] W^T + b` for `rows` rows.
/// @param x [rows, w.in] host, row-major; @param out [rows, w.out] host; must not alias `x`.
/// The output columns are split into pieces (rows of W) spread over up to `thread_count()`
/// threads, each piece one BLAS call on its thread; a piece's arithmetic does not depend on the
/// split, so results do not depend on the thread count. fp16/bf16 weights are widened piece by
/// piece into a buffer that each thread keeps (it grows to at most 1 Mi floats once, then is
/// reused).
inline void linear(const float* x, std::size_t rows, const linear_weights& w, float* out) {
  if (rows == 0) return;
  const auto n_out = static_cast<std::size_t>(w.out);
  const auto in = static_cast<std::size_t>(w.in);
  const bool bias = !w.bias.empty();
  const float beta = bias ? 1.0f : 0.0f;
  const float* const W = w.weight.f32();
  // Columns per piece. fp32: the columns over the workers, aligned. fp16/bf16: what fits the
  // widening buffer, about 64 Ki floats for a GEMV (bandwidth-bound: stay in cache) and 1 Mi
  // for a GEMM (wide enough for the BLAS kernels), whatever the thread count.
  const double work =
      static_cast<double>(rows) * static_cast<double>(n_out) * static_cast<double>(in);
  const std::size_t most = (n_out + detail::linear_column_align - 1) / detail::linear_column_align;
  const std::size_t workers = workers_for(work, rows == 1 ? gemv_split_min : gemm_split_min,
                                          std::max<std::size_t>(most, 1));
  std::size_t piece = 0;
  if (W != nullptr) {
    const std::size_t share = (n_out + workers - 1) / workers;
    piece = (share + detail::linear_column_align - 1) / detail::linear_column_align *
            detail::linear_column_align;
  } else {
    const std::size_t target = rows == 1 ? (std::size_t{1} << 16) : (std::size_t{1} << 20);
    piece = target / std::max<std::size_t>(in, 1);
  }
  piece = std::clamp<std::size_t>(piece, 1, std::max<std::size_t>(n_out, 1));
  const std::size_t pieces = (n_out + piece - 1) / piece;
  parallel_for(pieces, workers, [&](std::size_t p, std::size_t) {
    const std::size_t o = p * piece;
    const std::size_t nb = std::min(piece, n_out - o);
    if (bias) {
      for (std::size_t r = 0; r < rows; ++r) {
        std::copy(w.bias.begin() + static_cast<std::ptrdiff_t>(o),
                  w.bias.begin() + static_cast<std::ptrdiff_t>(o + nb), out + r * n_out + o);
      }
    }
    const float* Wp = nullptr;
    if (W != nullptr) {
      Wp = W + o * in;
    } else {
      thread_local std::vector<float> widened;
      if (widened.size() < nb * in) widened.resize(nb * in);
      w.weight.widen_rows(static_cast<index_t>(o), static_cast<index_t>(nb), widened.data());
      Wp = widened.data();
    }
    detail::gemm_rows(x, rows, Wp, static_cast<index_t>(nb), w.in, beta, out + o, w.out);
  });
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
