// SPDX-License-Identifier: Apache-2.0
/// @file kernel_validate.cuh
/// @brief On-device check of a CSR `indptr` (and, optionally, the square-matrix offsets derived
/// from it, as the training kernels use) for entry points that cannot read device offsets
/// without a host sync.
#pragma once

#include <dynllava/core/config.hpp>

#include <cstddef>
#include <cstdint>

namespace dynllava::cuda::detail {

/// @brief One thread checks `indptr` against the sizes the caller passed and, when
/// `square_offset` is non-null, writes `square_offset[b] = sum_{b' < b} n_b'^2`.
/// `*valid` becomes 0 on any inconsistency (`accumulate`: only ever lowered, else overwritten);
/// `*invalid_out` (nullable) is raised to 1 then. Later kernels return early when `*valid == 0`.
/// @param scores_expected `heads * sum n_b^2` the score tensor must hold (ignored when
///        `square_offset` is null); @param mask_expected `sum n_b^2` (same)
template <int = 0>
__global__ void validate_layout_kernel(const index_t* indptr, std::size_t batch,
                                       std::size_t nnz_expected, long long heads,
                                       std::size_t scores_expected, std::size_t mask_expected,
                                       long long* square_offset, int* valid, bool accumulate,
                                       int* invalid_out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  bool ok = batch == 0 ? nnz_expected == 0 : indptr[0] == 0;
  long long sq = 0;
  if (square_offset != nullptr) square_offset[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const long long n = static_cast<long long>(indptr[b + 1]) - indptr[b];
    if (n < 0) ok = false;
    sq += n * n;
    if (square_offset != nullptr) square_offset[b + 1] = sq;
  }
  if (batch > 0 && static_cast<std::size_t>(indptr[batch]) != nnz_expected) ok = false;
  if (square_offset != nullptr) {
    if (static_cast<std::size_t>(sq) != mask_expected) ok = false;
    if (static_cast<std::size_t>(sq * heads) != scores_expected) ok = false;
  }
  if (accumulate) {
    if (!ok) *valid = 0;
  } else {
    *valid = ok ? 1 : 0;
  }
  if (!ok && invalid_out != nullptr) *invalid_out = 1;
}

}  // namespace dynllava::cuda::detail
