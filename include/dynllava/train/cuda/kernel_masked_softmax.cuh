// SPDX-License-Identifier: Apache-2.0
/// @file kernel_masked_softmax.cuh
/// @brief `__global__` kernels of MaskedSoftmax forward and backward (API:
/// device_masked_softmax.cuh).
///
/// One block per token row `t` (query `i` of sequence `b`), grid-stride; the block loops over the
/// heads, so the mask row `(b, i)` and its gradient belong to one block (no atomics, heads summed
/// in ascending order, deterministic).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_reduce.cuh>
#include <dynllava/train/attention_layout.hpp>
#include <dynllava/train/masked_softmax.hpp>

#include <climits>
#include <cstddef>

namespace dynllava::cuda::detail {

/// Geometry of one token row.
struct softmax_row {
  index_t n;           ///< sequence length = row length N
  index_t i;           ///< query index within the sequence
  long long mask_row;  ///< offset of mask row (b, i)
  long long head0;     ///< offset of score row (b, head 0, i)
  long long head_stride;
};

__device__ inline softmax_row locate_softmax_row(const index_t* indptr, std::size_t batch,
                                                 const long long* square_offset, index_t t,
                                                 int heads) {
  const std::size_t b = sequence_of_token(indptr, batch, t);
  softmax_row r{};
  r.n = indptr[b + 1] - indptr[b];
  r.i = t - indptr[b];
  const long long nn = static_cast<long long>(r.n) * r.n;
  r.mask_row = square_offset[b] + static_cast<long long>(r.i) * r.n;
  r.head0 = heads * square_offset[b] + static_cast<long long>(r.i) * r.n;
  r.head_stride = nn;
  (void)heads;
  return r;
}

/// Max over the allowed columns and the first column attaining it.
__device__ inline void row_max(const float* x, index_t n, index_t i, bool causal, float& m,
                               int& arg, block_reduce_storage& s) {
  m = -__int_as_float(0x7f800000);
  arg = INT_MAX;
  for (index_t j = static_cast<index_t>(threadIdx.x); j < n;
       j += static_cast<index_t>(blockDim.x)) {
    if (!masked_softmax_allowed(i, j, causal)) continue;
    if (max_arg_before(x[j], j, m, arg)) {
      m = x[j];
      arg = j;
    }
  }
  block_max_arg(m, arg, s);
}

template <int = 0>
__global__ void masked_softmax_forward_kernel(const index_t* indptr, std::size_t batch,
                                              const long long* square_offset, const int* valid,
                                              const float* scores, const float* mask, float* attn,
                                              index_t nnz, int heads, float eps, bool causal) {
  __shared__ block_reduce_storage storage;
  if (*valid == 0) return;
  for (index_t t = static_cast<index_t>(blockIdx.x); t < nnz;
       t += static_cast<index_t>(gridDim.x)) {
    const softmax_row r = locate_softmax_row(indptr, batch, square_offset, t, heads);
    const float c = eps / static_cast<float>(r.n);
    const float* g = mask + r.mask_row;
    for (int h = 0; h < heads; ++h) {
      const long long row = r.head0 + h * r.head_stride;
      const float* x = scores + row;
      float m = 0.0f;
      int arg = 0;
      row_max(x, r.n, r.i, causal, m, arg, storage);
      float sum = 0.0f;
      for (index_t j = static_cast<index_t>(threadIdx.x); j < r.n;
           j += static_cast<index_t>(blockDim.x)) {
        if (masked_softmax_allowed(r.i, j, causal)) {
          sum += masked_softmax_exp(x[j], m) * (j == r.i ? 1.0f : g[j]);
        }
      }
      const float d = block_sum(sum, storage) + eps;
      float* out = attn + row;
      for (index_t j = static_cast<index_t>(threadIdx.x); j < r.n;
           j += static_cast<index_t>(blockDim.x)) {
        const float u = masked_softmax_allowed(r.i, j, causal)
                            ? masked_softmax_exp(x[j], m) * (j == r.i ? 1.0f : g[j])
                            : 0.0f;
        out[j] = (u + c) / d;
      }
    }
  }
}

template <int = 0>
__global__ void masked_softmax_backward_kernel(const index_t* indptr, std::size_t batch,
                                               const long long* square_offset, const int* valid,
                                               const float* scores, const float* mask,
                                               const float* d_attn, float* d_scores, float* d_mask,
                                               index_t nnz, int heads, float eps, bool causal) {
  __shared__ block_reduce_storage storage;
  if (*valid == 0) return;
  for (index_t t = static_cast<index_t>(blockIdx.x); t < nnz;
       t += static_cast<index_t>(gridDim.x)) {
    const softmax_row r = locate_softmax_row(indptr, batch, square_offset, t, heads);
    const float c = eps / static_cast<float>(r.n);
    const float* g = mask + r.mask_row;
    float* dg = d_mask + r.mask_row;
    for (int h = 0; h < heads; ++h) {
      const long long row = r.head0 + h * r.head_stride;
      const float* x = scores + row;
      const float* up = d_attn + row;
      float* dx = d_scores + row;
      float m = 0.0f;
      int arg = 0;
      row_max(x, r.n, r.i, causal, m, arg, storage);
      float sum_u = 0.0f, sum_gu = 0.0f, sum_g = 0.0f;
      for (index_t j = static_cast<index_t>(threadIdx.x); j < r.n;
           j += static_cast<index_t>(blockDim.x)) {
        sum_g += up[j];
        if (!masked_softmax_allowed(r.i, j, causal)) continue;
        const float u = masked_softmax_exp(x[j], m) * (j == r.i ? 1.0f : g[j]);
        sum_u += u;
        sum_gu += up[j] * u;
      }
      sum_u = block_sum(sum_u, storage);
      sum_gu = block_sum(sum_gu, storage);
      sum_g = block_sum(sum_g, storage);
      const float d = sum_u + eps;
      const float s = (sum_gu + c * sum_g) / d;
      const float d_max = -(sum_gu - s * sum_u) / d;
      for (index_t j = static_cast<index_t>(threadIdx.x); j < r.n;
           j += static_cast<index_t>(blockDim.x)) {
        float gx = 0.0f, gm = 0.0f;
        if (masked_softmax_allowed(r.i, j, causal)) {
          const float e = masked_softmax_exp(x[j], m);
          const float u = e * (j == r.i ? 1.0f : g[j]);
          gx = u * (up[j] - s) / d + (j == arg ? d_max : 0.0f);
          if (j != r.i) gm = e * (up[j] - s) / d;
        }
        dx[j] = gx;
        dg[j] = (h == 0 ? 0.0f : dg[j]) + gm;  // this thread owns column j for every head
      }
    }
  }
}

}  // namespace dynllava::cuda::detail
