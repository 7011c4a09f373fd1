// SPDX-License-Identifier: Apache-2.0
/// @file kernel_attention_mask.cuh
/// @brief `__global__` kernels of the keep-mask -> attention-mask build and its backward.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_reduce.cuh>
#include <dynllava/train/attention_layout.hpp>
#include <dynllava/train/attention_mask.hpp>

#include <cstddef>

namespace dynllava::cuda::detail {

/// One block per token row `t` (grid-stride): writes row `i` of its sequence's mask.
template <int = 0>
__global__ void build_attention_mask_kernel(const index_t* indptr, std::size_t batch,
                                            const long long* square_offset, const int* valid,
                                            const float* keep, float* mask, index_t nnz,
                                            bool sparse) {
  if (*valid == 0) return;
  for (index_t t = static_cast<index_t>(blockIdx.x); t < nnz;
       t += static_cast<index_t>(gridDim.x)) {
    const std::size_t b = sequence_of_token(indptr, batch, t);
    const index_t first = indptr[b];
    const index_t n = indptr[b + 1] - first;
    const index_t i = t - first;
    float* row = mask + square_offset[b] + static_cast<long long>(i) * n;
    for (index_t j = static_cast<index_t>(threadIdx.x); j < n;
         j += static_cast<index_t>(blockDim.x)) {
      row[j] = attention_mask_entry<float>(i, j, keep[first + j], sparse);
    }
  }
}

/// One block per token `t` (grid-stride): `d_keep[t] = sum_{i > j} d_mask[i, j]` (sparse layers).
template <int = 0>
__global__ void attention_mask_backward_kernel(const index_t* indptr, std::size_t batch,
                                               const long long* square_offset, const int* valid,
                                               const float* d_mask, float* d_keep, index_t nnz,
                                               bool sparse) {
  __shared__ block_reduce_storage storage;
  if (*valid == 0) return;
  for (index_t t = static_cast<index_t>(blockIdx.x); t < nnz;
       t += static_cast<index_t>(gridDim.x)) {
    const std::size_t b = sequence_of_token(indptr, batch, t);
    const index_t first = indptr[b];
    const index_t n = indptr[b + 1] - first;
    const index_t j = t - first;
    const float* base = d_mask + square_offset[b];
    float acc = 0.0f;
    if (sparse) {
      for (index_t i = j + 1 + static_cast<index_t>(threadIdx.x); i < n;
           i += static_cast<index_t>(blockDim.x)) {
        acc += base[static_cast<long long>(i) * n + j];
      }
    }
    acc = block_sum(acc, storage);
    if (threadIdx.x == 0) d_keep[t] = acc;
  }
}

}  // namespace dynllava::cuda::detail
