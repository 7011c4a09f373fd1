// SPDX-License-Identifier: Apache-2.0
/// @file kernel_attention.cuh
/// @brief Bidirectional multi-head attention of each sequence's rows over its own rows, on CUDA
/// (the device twin of `nn::attention` with `causal = false` and nothing cached): the image
/// predictor's 8-head attention over a sequence's image tokens. One launch for the whole ragged
/// batch; each thread owns one query row of one head and runs `nn::online_softmax` over the
/// sequence's keys, staged through shared memory a tile at a time. fp32 arithmetic for every
/// storage type; nothing allocated, no workspace.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/nn/cuda/kernel_rows.cuh>
#include <dynllava/nn/online_softmax.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace dynllava::cuda::detail {

inline constexpr unsigned attention_threads = 128;  ///< query rows per block
inline constexpr index_t attention_key_tile = 32;   ///< keys staged in shared memory per step
inline constexpr index_t attention_max_head_dim = 128;

/// @brief Grid (sequences, heads, query tiles of `attention_threads`): `out[r, h hd .. (h+1) hd)
/// = sum_j softmax_j(q_r . k_j / sqrt(hd)) v_j` over the rows `j` of `r`'s sequence, with
/// `q, k, v` the head's slices of `qkv [rows, 3 d]` (Q, K, V concatenated). A sequence whose
/// device offsets fall outside `[0, rows]` is skipped (never an access out of bounds).
template <class T>
__global__ void __launch_bounds__(attention_threads)
    bidirectional_attention_kernel(const T* qkv, const index_t* indptr, std::size_t batch,
                                   std::size_t rows, index_t d, index_t heads, T* out) {
  __shared__ float keys[attention_key_tile * attention_max_head_dim];
  __shared__ float values[attention_key_tile * attention_max_head_dim];
  const index_t hd = d / heads;
  const auto h = static_cast<std::size_t>(blockIdx.y);
  const std::size_t ld = 3 * static_cast<std::size_t>(d);
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t lo = indptr[b];
    const index_t hi = indptr[b + 1];
    // the same for every thread of the block: the barriers below are reached by all or none
    if (lo < 0 || hi <= lo || static_cast<std::size_t>(hi) > rows) continue;
    const index_t n = hi - lo;
    const auto first_query = static_cast<index_t>(blockIdx.z * attention_threads);
    if (first_query >= n) continue;
    const index_t i = first_query + static_cast<index_t>(threadIdx.x);
    const bool active = i < n;
    float q[attention_max_head_dim];
    float acc[attention_max_head_dim];
    if (active) {
      const T* qi = qkv + static_cast<std::size_t>(lo + i) * ld + h * static_cast<std::size_t>(hd);
      for (index_t c = 0; c < hd; ++c) {
        q[c] = to_float(qi[c]);
        acc[c] = 0.0f;
      }
    }
    nn::online_softmax softmax;
    for (index_t j0 = 0; j0 < n; j0 += attention_key_tile) {
      const index_t count = n - j0 < attention_key_tile ? n - j0 : attention_key_tile;
      __syncthreads();  // every thread is done with the previous tile
      for (index_t e = static_cast<index_t>(threadIdx.x); e < count * hd;
           e += static_cast<index_t>(attention_threads)) {
        const index_t r = e / hd;
        const index_t c = e % hd;
        const T* row = qkv + static_cast<std::size_t>(lo + j0 + r) * ld +
                       h * static_cast<std::size_t>(hd) + static_cast<std::size_t>(c);
        keys[r * hd + c] = to_float(row[d]);
        values[r * hd + c] = to_float(row[2 * d]);
      }
      __syncthreads();
      if (!active) continue;
      for (index_t r = 0; r < count; ++r) {
        float dot = 0.0f;
        for (index_t c = 0; c < hd; ++c) dot += q[c] * keys[r * hd + c];
        const nn::online_softmax_step step = softmax.add(dot * scale);
        for (index_t c = 0; c < hd; ++c) {
          acc[c] = acc[c] * step.rescale + step.weight * values[r * hd + c];
        }
      }
    }
    if (active) {
      T* o = out + static_cast<std::size_t>(lo + i) * static_cast<std::size_t>(d) +
             h * static_cast<std::size_t>(hd);
      const float inv = 1.0f / softmax.sum();
      for (index_t c = 0; c < hd; ++c) o[c] = from_float<T>(acc[c] * inv);
    }
    __syncthreads();  // the tiles are reused by the block's next sequence
  }
}

/// @brief Enqueues `bidirectional_attention_kernel` for a ragged batch of `rows` rows whose
/// longest sequence has `max_n` rows (host-known), `d = heads * head_dim`.
/// @return `cudaErrorInvalidValue` when `heads` does not divide `d` or the head dimension exceeds
///         `attention_max_head_dim` (nothing launched), else the launch status.
template <class T>
cudaError_t bidirectional_attention(const T* qkv, const index_t* indptr, std::size_t batch,
                                    std::size_t rows, std::size_t max_n, index_t d, index_t heads,
                                    T* out, cudaStream_t stream) {
  if (heads <= 0 || d <= 0 || d % heads != 0 || d / heads > attention_max_head_dim) {
    return cudaErrorInvalidValue;
  }
  if (batch == 0 || max_n == 0) return cudaSuccess;
  const std::size_t tiles = (max_n + attention_threads - 1) / attention_threads;
  if (tiles > 65535 || heads > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(std::min<std::size_t>(batch, 65535)),
                  static_cast<unsigned>(heads), static_cast<unsigned>(tiles));
  bidirectional_attention_kernel<T>
      <<<grid, attention_threads, 0, stream>>>(qkv, indptr, batch, rows, d, heads, out);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda::detail
