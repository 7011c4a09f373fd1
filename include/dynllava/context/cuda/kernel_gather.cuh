// SPDX-License-Identifier: Apache-2.0
/// @file kernel_gather.cuh
/// @brief `__global__` kernels of the row gather/scatter (see device_gather.cuh for the API).
#pragma once

#include <dynllava/core/config.hpp>

#include <cstddef>

namespace dynllava::cuda::detail {

/// `dst[i, :] = src[rows[i], :]` over `V`-sized chunks; a row index outside `[0, num_src_rows)`
/// zero-fills its destination row and raises `*out_of_range` (when non-null).
/// Grid-stride over rows (blocks) and chunks (threads).
template <class V>
__global__ void gather_rows_kernel(const V* __restrict__ src, std::size_t chunks_per_row,
                                   const index_t* __restrict__ rows, std::size_t num_rows,
                                   std::size_t num_src_rows, V* __restrict__ dst,
                                   int* out_of_range) {
  for (std::size_t i = blockIdx.x; i < num_rows; i += gridDim.x) {
    const index_t r = rows[i];
    const bool valid = r >= 0 && static_cast<std::size_t>(r) < num_src_rows;
    if (!valid && threadIdx.x == 0 && out_of_range != nullptr) atomicExch(out_of_range, 1);
    V* to = dst + i * chunks_per_row;
    const V* from = src + static_cast<std::size_t>(valid ? r : 0) * chunks_per_row;
    for (std::size_t c = threadIdx.x; c < chunks_per_row; c += blockDim.x) {
      to[c] = valid ? from[c] : V{};
    }
  }
}

/// `dst[rows[i], :] = src[i, :]`; an index outside `[0, num_dst_rows)` is skipped and raises
/// `*out_of_range` (when non-null).
template <class V>
__global__ void scatter_rows_kernel(const V* __restrict__ src, std::size_t chunks_per_row,
                                    const index_t* __restrict__ rows, std::size_t num_rows,
                                    std::size_t num_dst_rows, V* __restrict__ dst,
                                    int* out_of_range) {
  for (std::size_t i = blockIdx.x; i < num_rows; i += gridDim.x) {
    const index_t r = rows[i];
    if (r < 0 || static_cast<std::size_t>(r) >= num_dst_rows) {
      if (threadIdx.x == 0 && out_of_range != nullptr) atomicExch(out_of_range, 1);
      continue;
    }
    const V* from = src + i * chunks_per_row;
    V* to = dst + static_cast<std::size_t>(r) * chunks_per_row;
    for (std::size_t c = threadIdx.x; c < chunks_per_row; c += blockDim.x) to[c] = from[c];
  }
}

}  // namespace dynllava::cuda::detail
