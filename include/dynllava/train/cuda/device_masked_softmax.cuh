// SPDX-License-Identifier: Apache-2.0
/// @file device_masked_softmax.cuh
/// @brief MaskedSoftmax on CUDA, forward and backward: device-level two-phase API (returns
/// `cudaError_t`; never throws, synchronises or allocates) and `on_stream` entry points.
///
/// Semantics equal `train/masked_softmax.hpp` in fp32 (summation order differs, so results agree
/// to rounding, not bit for bit). The token offsets live on the device: their consistency with
/// the span sizes is checked by a one-thread kernel; an inconsistent layout writes nothing and
/// raises the optional `d_invalid` flag.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/stream_workspace.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/train/cuda/kernel_masked_softmax.cuh>
#include <dynllava/train/cuda/square_layout.cuh>
#include <dynllava/train/masked_softmax.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <limits>

namespace dynllava::cuda {

namespace detail {

inline bool masked_softmax_params_ok(const masked_softmax_params& p, std::size_t nnz) {
  return p.heads > 0 && p.eps >= 0.0 && std::isfinite(p.eps) &&
         nnz <= static_cast<std::size_t>(std::numeric_limits<index_t>::max());
}

}  // namespace detail

/// @brief MaskedSoftmax forward (see `cpu::masked_softmax_forward`).
/// @param[in] temp device workspace, or null to query `temp_bytes`
/// @param[in,out] temp_bytes workspace size; receives the size needed when `temp` is null
/// @param[in] token_indptr [batch + 1] device CSR offsets of the tokens
/// @param[in] num_tokens `token_indptr[batch]` (host-side count, checked on the device)
/// @param[in] scores [heads, n_b, n_b] per sequence, packed; device, read-only
/// @param[in] mask [n_b, n_b] per sequence, packed; device, read-only
/// @param[out] attn same shape as `scores`; device
/// @param[in] params eps, causal, heads
/// @param[out] d_invalid device int or null: set to 1 when `token_indptr` disagrees with the sizes
/// @param[in] stream CUDA stream
/// @return `cudaErrorInvalidValue` for bad parameters or a too-small workspace, else the launch
///         status
inline cudaError_t masked_softmax_forward(void* temp, std::size_t& temp_bytes,
                                          device_span<const index_t> token_indptr,
                                          std::size_t num_tokens, device_span<const float> scores,
                                          device_span<const float> mask, device_span<float> attn,
                                          masked_softmax_params params, int* d_invalid,
                                          cudaStream_t stream) {
  if (!detail::masked_softmax_params_ok(params, num_tokens) || attn.size() != scores.size()) {
    return cudaErrorInvalidValue;
  }
  detail::square_layout layout;
  cudaError_t status = cudaSuccess;
  const auto step =
      detail::prepare_square_layout(temp, temp_bytes, token_indptr, num_tokens, params.heads,
                                    scores.size(), mask.size(), d_invalid, stream, layout, status);
  if (step != detail::layout_step::ready) return status;
  detail::masked_softmax_forward_kernel<<<detail::row_blocks(num_tokens), detail::row_block_threads,
                                          0, stream>>>(
      token_indptr.data(), token_indptr.size() - 1, layout.square_offset, layout.valid,
      scores.data(), mask.data(), attn.data(), static_cast<index_t>(num_tokens), params.heads,
      static_cast<float>(params.eps), params.causal);
  return cudaPeekAtLastError();
}

/// @brief MaskedSoftmax backward (see `cpu::masked_softmax_backward`).
/// @param[in] d_attn same shape as `scores`; device, read-only
/// @param[out] d_scores same shape as `scores`; device
/// @param[out] d_mask same shape as `mask`; device (overwritten; summed over heads)
/// Other parameters as in `masked_softmax_forward`.
inline cudaError_t masked_softmax_backward(
    void* temp, std::size_t& temp_bytes, device_span<const index_t> token_indptr,
    std::size_t num_tokens, device_span<const float> scores, device_span<const float> mask,
    device_span<const float> d_attn, device_span<float> d_scores, device_span<float> d_mask,
    masked_softmax_params params, int* d_invalid, cudaStream_t stream) {
  if (!detail::masked_softmax_params_ok(params, num_tokens) || d_attn.size() != scores.size() ||
      d_scores.size() != scores.size() || d_mask.size() != mask.size()) {
    return cudaErrorInvalidValue;
  }
  detail::square_layout layout;
  cudaError_t status = cudaSuccess;
  const auto step =
      detail::prepare_square_layout(temp, temp_bytes, token_indptr, num_tokens, params.heads,
                                    scores.size(), mask.size(), d_invalid, stream, layout, status);
  if (step != detail::layout_step::ready) return status;
  detail::masked_softmax_backward_kernel<<<detail::row_blocks(num_tokens),
                                           detail::row_block_threads, 0, stream>>>(
      token_indptr.data(), token_indptr.size() - 1, layout.square_offset, layout.valid,
      scores.data(), mask.data(), d_attn.data(), d_scores.data(), d_mask.data(),
      static_cast<index_t>(num_tokens), params.heads, static_cast<float>(params.eps),
      params.causal);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

namespace dynllava {

namespace detail {
inline void check_masked_softmax_host_args(const char* fn, std::size_t scores, std::size_t mask,
                                           std::size_t out, const masked_softmax_params& p) {
  DYNLLAVA_EXPECTS(p.heads > 0, "{}: heads must be > 0, got {}", fn, p.heads);
  DYNLLAVA_EXPECTS(p.eps >= 0.0 && std::isfinite(p.eps), "{}: eps must be finite and >= 0, got {}",
                   fn, p.eps);
  DYNLLAVA_EXPECTS(scores == mask * static_cast<std::size_t>(p.heads),
                   "{}: scores must hold heads * mask.size() = {} values, got {}", fn,
                   mask * static_cast<std::size_t>(p.heads), scores);
  DYNLLAVA_EXPECTS(out == scores, "{}: the score-shaped output must hold {} values, got {}", fn,
                   scores, out);
}
}  // namespace detail

/// @brief Execution-tag entry point (asynchronous; workspace allocated in stream order).
/// Validates what the host can see (sizes, heads, eps); an inconsistent device `token_indptr`
/// raises `d_invalid` (when given) and writes nothing.
/// @param num_tokens `token_indptr[batch]`
/// @throws dynllava::error on bad arguments, dynllava::cuda_error on a CUDA failure.
inline void masked_softmax_forward(cuda::on_stream exec, device_span<const index_t> token_indptr,
                                   std::size_t num_tokens, device_span<const float> scores,
                                   device_span<const float> mask, device_span<float> attn,
                                   masked_softmax_params params = {}, int* d_invalid = nullptr) {
  detail::check_masked_softmax_host_args("masked_softmax_forward", scores.size(), mask.size(),
                                         attn.size(), params);
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::masked_softmax_forward(temp, bytes, token_indptr, num_tokens, scores, mask, attn,
                                        params, d_invalid, exec.stream);
  });
}

/// Execution-tag entry point (asynchronous). @see masked_softmax_forward(cuda::on_stream, ...)
inline void masked_softmax_backward(cuda::on_stream exec, device_span<const index_t> token_indptr,
                                    std::size_t num_tokens, device_span<const float> scores,
                                    device_span<const float> mask, device_span<const float> d_attn,
                                    device_span<float> d_scores, device_span<float> d_mask,
                                    masked_softmax_params params = {}, int* d_invalid = nullptr) {
  detail::check_masked_softmax_host_args("masked_softmax_backward", scores.size(), mask.size(),
                                         d_scores.size(), params);
  DYNLLAVA_EXPECTS(
      d_attn.size() == scores.size() && d_mask.size() == mask.size(),
      "masked_softmax_backward: d_attn must hold {} and d_mask {} values, got {} and {}",
      scores.size(), mask.size(), d_attn.size(), d_mask.size());
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::masked_softmax_backward(temp, bytes, token_indptr, num_tokens, scores, mask,
                                         d_attn, d_scores, d_mask, params, d_invalid, exec.stream);
  });
}

}  // namespace dynllava
