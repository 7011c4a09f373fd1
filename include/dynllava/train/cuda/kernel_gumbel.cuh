// SPDX-License-Identifier: Apache-2.0
/// @file kernel_gumbel.cuh
/// @brief `__global__` kernels of the hard Gumbel-Softmax (see device_gumbel.cuh for the API).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/philox.hpp>

#include <cstddef>
#include <cstdint>

namespace dynllava::cuda::detail {

/// `noise[t, c] = gumbel(uniform(word c of philox_draw(key, first_token + t)))`; grid-stride.
template <int = 0>
__global__ void gumbel_noise_kernel(philox_key key, std::uint32_t first_token, float* noise,
                                    std::size_t num_tokens) {
  for (std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
       t < num_tokens; t += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const philox_block w = philox_draw(key, first_token + static_cast<std::uint32_t>(t));
    noise[2 * t] = gumbel_from_uniform<float>(uniform_open01(w.v[0]));
    noise[2 * t + 1] = gumbel_from_uniform<float>(uniform_open01(w.v[1]));
  }
}

/// Per-token forward; grid-stride.
template <int = 0>
__global__ void gumbel_forward_kernel(const float* logits, const float* noise, float tau,
                                      float* keep, float* soft, std::size_t num_tokens) {
  for (std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
       t < num_tokens; t += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const auto r = gumbel_token_forward<float>(logits[2 * t], logits[2 * t + 1], noise[2 * t],
                                               noise[2 * t + 1], tau);
    keep[t] = r.keep;
    soft[t] = r.soft;
  }
}

/// Per-token straight-through backward; grid-stride.
template <int = 0>
__global__ void gumbel_backward_kernel(const float* logits, const float* noise, float tau,
                                       const float* d_keep, float* d_logits,
                                       std::size_t num_tokens) {
  for (std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
       t < num_tokens; t += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float g = gumbel_token_backward<float>(logits[2 * t], logits[2 * t + 1], noise[2 * t],
                                                 noise[2 * t + 1], tau, d_keep[t]);
    d_logits[2 * t] = g;
    d_logits[2 * t + 1] = -g;
  }
}

}  // namespace dynllava::cuda::detail
