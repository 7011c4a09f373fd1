// SPDX-License-Identifier: Apache-2.0
/// @file square_layout.cuh
/// @brief Workspace and on-device validation shared by the CUDA attention-mask and MaskedSoftmax
/// calls: `[batch + 1]` 64-bit square offsets plus a validity flag, carved with
/// `alias_temporaries` (two-phase: a null `temp` reports the bytes needed).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/kernel_validate.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>

namespace dynllava::cuda::detail {

/// Device pointers into the caller's workspace.
struct square_layout {
  long long* square_offset = nullptr;  ///< [batch + 1] device
  int* valid = nullptr;                ///< [1] device: 1 when the layout is consistent
};

/// Outcome of `prepare_square_layout`: run the main kernels only when `ready`.
enum class layout_step { query, ready, nothing_to_do, error };

/// @brief Phase 1 (null `temp`): writes the bytes needed. Phase 2: launches the validation
/// kernel that fills `out` on `stream`.
/// @param[in] indptr [batch + 1] device CSR offsets of the tokens
/// @param[in] nnz number of tokens the per-token arrays hold
/// @param[in] heads matrices per sequence in the score tensor
/// @param[in] scores_expected size of the score tensor (`heads * sum n_b^2` when consistent)
/// @param[in] mask_expected size of the mask tensor (`sum n_b^2` when consistent)
/// @param[out] d_invalid device int or null: raised to 1 when the layout is inconsistent
inline layout_step prepare_square_layout(void* temp, std::size_t& temp_bytes,
                                         device_span<const index_t> indptr, std::size_t nnz,
                                         long long heads, std::size_t scores_expected,
                                         std::size_t mask_expected, int* d_invalid,
                                         cudaStream_t stream, square_layout& out,
                                         cudaError_t& status) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  std::array<void*, 2> parts{};
  const std::array<std::size_t, 2> sizes{(batch + 1) * sizeof(long long), sizeof(int)};
  const workspace_status ws = alias_temporaries(temp, temp_bytes, parts, sizes);
  status = cudaSuccess;
  if (ws == workspace_status::size_query) return layout_step::query;
  if (ws == workspace_status::too_small) {
    status = cudaErrorInvalidValue;
    return layout_step::error;
  }
  out.square_offset = static_cast<long long*>(parts[0]);
  out.valid = static_cast<int*>(parts[1]);
  validate_layout_kernel<<<1, 1, 0, stream>>>(indptr.data(), batch, nnz, heads, scores_expected,
                                              mask_expected, out.square_offset, out.valid, false,
                                              d_invalid);
  status = cudaPeekAtLastError();
  if (status != cudaSuccess) return layout_step::error;
  return nnz == 0 ? layout_step::nothing_to_do : layout_step::ready;
}

inline constexpr unsigned row_block_threads = 256;

/// Blocks for a grid-stride loop over `rows`.
inline unsigned row_blocks(std::size_t rows) {
  return static_cast<unsigned>(rows < 65535 ? rows : 65535);
}

}  // namespace dynllava::cuda::detail
