// SPDX-License-Identifier: Apache-2.0
/// @file blas.hpp
/// @brief The CBLAS that the nn blocks call (Debian's OpenBLAS), held to one thread per call:
/// the nn blocks spread their work over their own threads (`parallel.hpp`), each BLAS call runs
/// on the thread that makes it.
#pragma once

#include <cblas.h>

#include <cstddef>

extern "C" {
// Declared by OpenBLAS's cblas.h; repeated so that the dependency on OpenBLAS is explicit.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
}

namespace dynllava::nn {

/// Below these many multiply-adds a GEMM (`2^23`, about 0.3 ms on one core) or a GEMV (`2^18`)
/// is not split over threads: starting a split costs more than it saves.
inline constexpr double gemm_split_min = 8388608.0;
inline constexpr double gemv_split_min = 262144.0;

namespace detail {

/// @brief Holds OpenBLAS to one thread, once per process, before the first BLAS call of the nn
/// blocks. Why: OpenBLAS's own workers wait spinning for about 0.1 s after each threaded call;
/// on a machine with as many cores as threads they take the cores from the nn blocks' own
/// threads (measured: attention after a two-thread SGEMM ran at one-thread speed). A caller
/// that raises OpenBLAS's count again gets the same results, more slowly.
inline void hold_blas_to_one_thread() noexcept {
  static const bool held = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)held;
}

}  // namespace detail

}  // namespace dynllava::nn
