// SPDX-License-Identifier: Apache-2.0
/// @file device_gumbel.cuh
/// @brief Hard Gumbel-Softmax on CUDA: device-level API (returns `cudaError_t`, never throws,
/// allocates or synchronises; no workspace needed) and the throwing `on_stream` entry points.
///
/// Semantics equal the CPU twins in `train/gumbel.hpp` (fp32). `gumbel_noise` produces the same
/// uniforms as the CPU bit for bit, whatever the launch configuration (counter = token index).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/train/cuda/kernel_gumbel.cuh>
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/philox.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace dynllava::cuda {

namespace detail {

inline constexpr unsigned elementwise_block_threads = 256;

inline unsigned elementwise_blocks(std::size_t n) {
  return static_cast<unsigned>(std::min<std::size_t>(
      (n + elementwise_block_threads - 1) / elementwise_block_threads, 65535));
}

inline bool gumbel_shapes_ok(std::size_t logits, std::size_t noise, std::size_t a, std::size_t b,
                             float tau) {
  return logits % 2 == 0 && noise == logits && a == logits / 2 && b == logits / 2 && tau > 0.0f &&
         std::isfinite(tau);
}

}  // namespace detail

/// @brief Gumbel noise for `noise.size() / 2` tokens (see `cpu::gumbel_noise`).
/// @param[in] key seed and offset
/// @param[out] noise [num_tokens, 2] device
/// @param[in] first_token counter of row 0
/// @param[in] stream CUDA stream
/// @return `cudaErrorInvalidValue` on an odd size or when the token counter would pass 2^32
///         (nothing launched), else the launch status
inline cudaError_t gumbel_noise(philox_key key, device_span<float> noise, std::uint32_t first_token,
                                cudaStream_t stream) {
  if (noise.size() % 2 != 0) return cudaErrorInvalidValue;
  const std::size_t n = noise.size() / 2;
  if (n + first_token > (std::size_t{1} << 32)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  detail::gumbel_noise_kernel<<<detail::elementwise_blocks(n), detail::elementwise_block_threads, 0,
                                stream>>>(key, first_token, noise.data(), n);
  return cudaPeekAtLastError();
}

/// @brief Hard Gumbel-Softmax forward (see `cpu::gumbel_hard_forward`).
/// @param[in] logits [num_tokens, 2] device, read-only
/// @param[in] noise [num_tokens, 2] device, read-only
/// @param[in] tau temperature, finite and > 0
/// @param[out] keep [num_tokens] device: 1 keep, 0 drop
/// @param[out] soft [num_tokens] device: `y_soft[0]`
/// @return `cudaErrorInvalidValue` on a shape mismatch or bad `tau`, else the launch status
inline cudaError_t gumbel_hard_forward(device_span<const float> logits,
                                       device_span<const float> noise, float tau,
                                       device_span<float> keep, device_span<float> soft,
                                       cudaStream_t stream) {
  if (!detail::gumbel_shapes_ok(logits.size(), noise.size(), keep.size(), soft.size(), tau)) {
    return cudaErrorInvalidValue;
  }
  const std::size_t n = keep.size();
  if (n == 0) return cudaSuccess;
  detail::gumbel_forward_kernel<<<detail::elementwise_blocks(n), detail::elementwise_block_threads,
                                  0, stream>>>(logits.data(), noise.data(), tau, keep.data(),
                                               soft.data(), n);
  return cudaPeekAtLastError();
}

/// @brief Straight-through backward (see `cpu::gumbel_hard_backward`).
/// @param[in] logits [num_tokens, 2] device, read-only
/// @param[in] noise [num_tokens, 2] device, read-only
/// @param[in] tau the forward's temperature
/// @param[in] d_keep [num_tokens] device, read-only
/// @param[out] d_logits [num_tokens, 2] device
/// @return `cudaErrorInvalidValue` on a shape mismatch or bad `tau`, else the launch status
inline cudaError_t gumbel_hard_backward(device_span<const float> logits,
                                        device_span<const float> noise, float tau,
                                        device_span<const float> d_keep,
                                        device_span<float> d_logits, cudaStream_t stream) {
  if (!detail::gumbel_shapes_ok(logits.size(), noise.size(), d_keep.size(), d_keep.size(), tau) ||
      d_logits.size() != logits.size()) {
    return cudaErrorInvalidValue;
  }
  const std::size_t n = d_keep.size();
  if (n == 0) return cudaSuccess;
  detail::gumbel_backward_kernel<<<detail::elementwise_blocks(n), detail::elementwise_block_threads,
                                   0, stream>>>(logits.data(), noise.data(), tau, d_keep.data(),
                                                d_logits.data(), n);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

namespace dynllava {

/// Execution-tag entry point (asynchronous). @throws dynllava::error on an odd size or counter
/// overflow, dynllava::cuda_error on a launch failure.
inline void gumbel_noise(cuda::on_stream exec, philox_key key, device_span<float> noise,
                         std::uint32_t first_token = 0) {
  DYNLLAVA_EXPECTS(noise.size() % 2 == 0,
                   "gumbel_noise: noise must be [num_tokens, 2], got {} values", noise.size());
  DYNLLAVA_EXPECTS(noise.size() / 2 + first_token <= (std::size_t{1} << 32),
                   "gumbel_noise: token counters must fit 32 bits, got {} tokens from {}",
                   noise.size() / 2, first_token);
  DYNLLAVA_CUDA_TRY(cuda::gumbel_noise(key, noise, first_token, exec.stream));
}

/// Execution-tag entry point (asynchronous). @throws dynllava::error on a shape mismatch or bad
/// `tau`, dynllava::cuda_error on a launch failure.
inline void gumbel_hard_forward(cuda::on_stream exec, device_span<const float> logits,
                                device_span<const float> noise, double tau, device_span<float> keep,
                                device_span<float> soft) {
  check_gumbel_shapes("gumbel_hard_forward", logits.size(), noise.size(), "keep", keep.size(),
                      "soft", soft.size(), tau);
  DYNLLAVA_CUDA_TRY(
      cuda::gumbel_hard_forward(logits, noise, static_cast<float>(tau), keep, soft, exec.stream));
}

/// Execution-tag entry point (asynchronous). @throws dynllava::error on a shape mismatch or bad
/// `tau`, dynllava::cuda_error on a launch failure.
inline void gumbel_hard_backward(cuda::on_stream exec, device_span<const float> logits,
                                 device_span<const float> noise, double tau,
                                 device_span<const float> d_keep, device_span<float> d_logits) {
  check_gumbel_shapes("gumbel_hard_backward", logits.size(), noise.size(), "d_keep", d_keep.size(),
                      "d_logits / 2", d_logits.size() / 2, tau);
  DYNLLAVA_EXPECTS(d_logits.size() == logits.size(),
                   "gumbel_hard_backward: d_logits must have {} values, got {}", logits.size(),
                   d_logits.size());
  DYNLLAVA_CUDA_TRY(cuda::gumbel_hard_backward(logits, noise, static_cast<float>(tau), d_keep,
                                               d_logits, exec.stream));
}

}  // namespace dynllava
