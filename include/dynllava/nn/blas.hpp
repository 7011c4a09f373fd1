// SPDX-License-Identifier: Apache-2.0
/// @file blas.hpp
/// @brief The CBLAS that the nn blocks call (Debian's OpenBLAS), and its thread count.
#pragma once

#include <dynllava/core/error.hpp>

#include <cblas.h>

#include <cstddef>

extern "C" {
// Declared by OpenBLAS's cblas.h; repeated so that the dependency on OpenBLAS is explicit.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
}

namespace dynllava::nn {

/// @brief Sets the number of threads OpenBLAS uses for every later BLAS call of the process.
/// The environment variable `OPENBLAS_NUM_THREADS` sets the initial count.
/// @throws dynllava::error when `threads < 1`.
inline void set_blas_threads(int threads) {
  DYNLLAVA_EXPECTS(threads >= 1, "set_blas_threads: threads must be >= 1, got {}", threads);
  openblas_set_num_threads(threads);
}

/// The number of threads OpenBLAS currently uses.
inline int blas_threads() noexcept { return openblas_get_num_threads(); }

/// Below these many multiply-adds a GEMM (`2^23`, about 0.3 ms on one core) or a GEMV (`2^18`)
/// runs on one BLAS thread: OpenBLAS splits far smaller products (from `2^18` and `2^13`), where
/// waking and joining its threads costs more than the split saves.
inline constexpr double blas_gemm_split_min = 8388608.0;
inline constexpr double blas_gemv_split_min = 262144.0;

/// @brief Holds OpenBLAS to one thread for its lifetime when `small`, and restores the count
/// after; does nothing otherwise or when it already runs one thread. Only the thread that set
/// the count (the caller of `set_blas_threads`) may hold one that changes it; OpenBLAS splits a
/// product over rows and columns only, so the results are the same either way.
class blas_small_call_scope {
 public:
  explicit blas_small_call_scope(bool small) noexcept
      : previous_(small ? openblas_get_num_threads() : 1) {
    if (previous_ != 1) openblas_set_num_threads(1);
  }
  ~blas_small_call_scope() {
    if (previous_ != 1) openblas_set_num_threads(previous_);
  }
  blas_small_call_scope(const blas_small_call_scope&) = delete;
  blas_small_call_scope& operator=(const blas_small_call_scope&) = delete;

 private:
  int previous_;
};

/// A scope for `cblas_sgemm` of `m x n x k`.
inline blas_small_call_scope blas_gemm_scope(std::size_t m, std::size_t n, std::size_t k) noexcept {
  return blas_small_call_scope(static_cast<double>(m) * static_cast<double>(n) *
                                   static_cast<double>(k) <
                               blas_gemm_split_min);
}

/// A scope for `cblas_sgemv` of an `m x n` matrix.
inline blas_small_call_scope blas_gemv_scope(std::size_t m, std::size_t n) noexcept {
  return blas_small_call_scope(static_cast<double>(m) * static_cast<double>(n) <
                               blas_gemv_split_min);
}

}  // namespace dynllava::nn
