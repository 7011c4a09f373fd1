// SPDX-License-Identifier: Apache-2.0
/// @file kernel_rows.cuh
/// @brief Row-wise building blocks on CUDA (the device twins of nn/layer_norm.hpp and
/// nn/activations.hpp): affine LayerNorm, bias plus optional exact-erf GELU, the image
/// predictor's global mean, and the 2-way margin `logit0 - logit1`. fp32 arithmetic for every
/// storage type.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_reduce.cuh>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/nn/pointwise.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>

namespace dynllava::cuda::detail {

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__half x) { return __half2float(x); }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ inline T from_float(float x) {
  return static_cast<T>(x);
}

/// @brief Grid-stride over rows, one block per row: `out[r, :] = (x[r, :] - mean) /
/// sqrt(var + eps) * gamma + beta` (biased variance, two passes, fp32). `out` may alias `x`.
template <class T>
__global__ void layer_norm_rows_kernel(const T* x, std::size_t rows, index_t dim,
                                       const float* gamma, const float* beta, float eps, T* out) {
  __shared__ block_reduce_storage storage;
  const auto d = static_cast<std::size_t>(dim);
  for (std::size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    float sum = 0.0f;
    for (std::size_t i = threadIdx.x; i < d; i += blockDim.x) sum += to_float(xr[i]);
    const float mean = block_sum(sum, storage) / static_cast<float>(d);
    float sq = 0.0f;
    for (std::size_t i = threadIdx.x; i < d; i += blockDim.x) {
      const float c = to_float(xr[i]) - mean;
      sq += c * c;
    }
    const float var = block_sum(sq, storage) / static_cast<float>(d);
    const float inv = rsqrtf(var + eps);
    T* o = out + r * d;
    for (std::size_t i = threadIdx.x; i < d; i += blockDim.x) {
      o[i] = from_float<T>(nn::layer_norm_value(to_float(xr[i]), mean, inv, gamma[i], beta[i]));
    }
    __syncthreads();  // `storage` is reused by the next row
  }
}

/// Grid-stride: `y[r, c] = act(y[r, c] + bias[c])`, `act` = GELU or identity; `bias` nullable.
template <class T>
__global__ void bias_activation_kernel(T* y, std::size_t rows, index_t dim, const float* bias,
                                       bool gelu) {
  const std::size_t n = rows * static_cast<std::size_t>(dim);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float v = to_float(y[i]);
    if (bias != nullptr) v += bias[i % static_cast<std::size_t>(dim)];
    y[i] = from_float<T>(gelu ? nn::gelu_erf(v) : v);
  }
}

/// @brief One block per sequence (grid-stride): replaces channels `[local, d)` of every row of
/// the sequence by their mean over its rows (the image predictor's global half).
template <class T>
__global__ void global_mean_kernel(T* h, const index_t* indptr, std::size_t batch, index_t d,
                                   index_t local, std::size_t rows) {
  const auto w = static_cast<std::size_t>(d);
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t lo = indptr[b];
    const index_t hi = indptr[b + 1];
    // offsets outside the rows (a caller's device offsets that break the precondition) are
    // skipped: never a read or write out of bounds
    if (lo < 0 || hi <= lo || static_cast<std::size_t>(hi) > rows) continue;
    const auto first = static_cast<std::size_t>(lo);
    const auto n = static_cast<std::size_t>(hi - lo);
    for (std::size_t c = static_cast<std::size_t>(local) + threadIdx.x; c < w; c += blockDim.x) {
      float sum = 0.0f;
      for (std::size_t i = 0; i < n; ++i) sum += to_float(h[(first + i) * w + c]);
      const T mean = from_float<T>(sum / static_cast<float>(n));
      for (std::size_t i = 0; i < n; ++i) h[(first + i) * w + c] = mean;
    }
  }
}

/// Grid-stride: `scores[i] = logits[2 i] - logits[2 i + 1]`.
template <int = 0>
__global__ void margin_kernel(const float* logits, std::size_t n, float* scores) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    scores[i] = keep_margin(logits[2 * i], logits[2 * i + 1]);
  }
}

}  // namespace dynllava::cuda::detail
