// SPDX-License-Identifier: Apache-2.0
/// @file blas.hpp
/// @brief The CBLAS that the nn blocks call (Debian's OpenBLAS), and its thread count.
#pragma once

#include <dynllava/core/error.hpp>

#include <cblas.h>

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

}  // namespace dynllava::nn
