// SPDX-License-Identifier: Apache-2.0
/// @file device_attention_mask.cuh
/// @brief Keep mask -> attention mask on CUDA, and its backward: device-level two-phase API
/// (returns `cudaError_t`; never throws, synchronises or allocates) and `on_stream` entry points.
///
/// Semantics equal `train/attention_mask.hpp` (fp32). The token offsets live on the device, so
/// their consistency with the span sizes is checked by a one-thread kernel: an inconsistent
/// layout writes nothing and raises the optional `d_invalid` flag.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/stream_workspace.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/train/attention_mask.hpp>
#include <dynllava/train/cuda/kernel_attention_mask.cuh>
#include <dynllava/train/cuda/square_layout.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <limits>

namespace dynllava::cuda {

/// @brief Builds each sequence's attention mask for one layer (see `cpu::build_attention_mask`).
/// @param[in] temp device workspace, or null to query `temp_bytes`
/// @param[in,out] temp_bytes workspace size; receives the size needed when `temp` is null
/// @param[in] token_indptr [batch + 1] device CSR offsets of the tokens
/// @param[in] keep [num_tokens] device, read-only
/// @param[out] mask [sum_b n_b^2] device
/// @param[in] params layer and sparse layer
/// @param[out] d_invalid device int or null: set to 1 when `token_indptr` disagrees with the sizes
/// @param[in] stream CUDA stream
/// @return `cudaErrorInvalidValue` for a too-small workspace or negative layers, else the launch
///         status
inline cudaError_t build_attention_mask(void* temp, std::size_t& temp_bytes,
                                        device_span<const index_t> token_indptr,
                                        device_span<const float> keep, device_span<float> mask,
                                        attention_mask_params params, int* d_invalid,
                                        cudaStream_t stream) {
  if (params.layer < 0 || params.sparse_layer < 0 ||
      keep.size() > static_cast<std::size_t>(std::numeric_limits<index_t>::max())) {
    return cudaErrorInvalidValue;
  }
  detail::square_layout layout;
  cudaError_t status = cudaSuccess;
  const auto step =
      detail::prepare_square_layout(temp, temp_bytes, token_indptr, keep.size(), 1, mask.size(),
                                    mask.size(), d_invalid, stream, layout, status);
  if (step != detail::layout_step::ready) return status;
  const std::size_t batch = token_indptr.size() - 1;
  detail::build_attention_mask_kernel<<<detail::row_blocks(keep.size()), detail::row_block_threads,
                                        0, stream>>>(
      token_indptr.data(), batch, layout.square_offset, layout.valid, keep.data(), mask.data(),
      static_cast<index_t>(keep.size()), params.layer >= params.sparse_layer);
  return cudaPeekAtLastError();
}

/// @brief Gradient of `keep` from the gradient of the mask (see `cpu::attention_mask_backward`).
/// @param[in] d_mask [sum_b n_b^2] device, read-only
/// @param[out] d_keep [num_tokens] device (overwritten)
/// Other parameters as in `build_attention_mask`.
inline cudaError_t attention_mask_backward(void* temp, std::size_t& temp_bytes,
                                           device_span<const index_t> token_indptr,
                                           device_span<const float> d_mask,
                                           device_span<float> d_keep, attention_mask_params params,
                                           int* d_invalid, cudaStream_t stream) {
  if (params.layer < 0 || params.sparse_layer < 0 ||
      d_keep.size() > static_cast<std::size_t>(std::numeric_limits<index_t>::max())) {
    return cudaErrorInvalidValue;
  }
  detail::square_layout layout;
  cudaError_t status = cudaSuccess;
  const auto step =
      detail::prepare_square_layout(temp, temp_bytes, token_indptr, d_keep.size(), 1, d_mask.size(),
                                    d_mask.size(), d_invalid, stream, layout, status);
  if (step != detail::layout_step::ready) return status;
  const std::size_t batch = token_indptr.size() - 1;
  detail::attention_mask_backward_kernel<<<detail::row_blocks(d_keep.size()),
                                           detail::row_block_threads, 0, stream>>>(
      token_indptr.data(), batch, layout.square_offset, layout.valid, d_mask.data(), d_keep.data(),
      static_cast<index_t>(d_keep.size()), params.layer >= params.sparse_layer);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

namespace dynllava {

/// @brief Execution-tag entry point (asynchronous; its workspace is allocated and freed in
/// stream order). Token offsets live on the device, so only host-visible arguments are
/// validated here; an inconsistent `token_indptr` raises `d_invalid` (when given) and writes
/// nothing. @throws dynllava::error on negative layers, dynllava::cuda_error on a CUDA failure.
inline void build_attention_mask(cuda::on_stream exec, device_span<const index_t> token_indptr,
                                 device_span<const float> keep, device_span<float> mask,
                                 attention_mask_params params = {}, int* d_invalid = nullptr) {
  DYNLLAVA_EXPECTS(params.layer >= 0 && params.sparse_layer >= 0,
                   "build_attention_mask: layer and sparse_layer must be >= 0, got {} and {}",
                   params.layer, params.sparse_layer);
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::build_attention_mask(temp, bytes, token_indptr, keep, mask, params, d_invalid,
                                      exec.stream);
  });
}

/// Execution-tag entry point (asynchronous). @see build_attention_mask(cuda::on_stream, ...)
inline void attention_mask_backward(cuda::on_stream exec, device_span<const index_t> token_indptr,
                                    device_span<const float> d_mask, device_span<float> d_keep,
                                    attention_mask_params params = {}, int* d_invalid = nullptr) {
  DYNLLAVA_EXPECTS(params.layer >= 0 && params.sparse_layer >= 0,
                   "attention_mask_backward: layer and sparse_layer must be >= 0, got {} and {}",
                   params.layer, params.sparse_layer);
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::attention_mask_backward(temp, bytes, token_indptr, d_mask, d_keep, params,
                                         d_invalid, exec.stream);
  });
}

}  // namespace dynllava
