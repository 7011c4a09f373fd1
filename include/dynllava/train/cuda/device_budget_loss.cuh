// SPDX-License-Identifier: Apache-2.0
/// @file device_budget_loss.cuh
/// @brief The budget loss on CUDA, forward and gradient: device-level two-phase API (returns
/// `cudaError_t`; never throws, synchronises or allocates) and `on_stream` entry points.
///
/// Semantics equal `train/budget_loss.hpp` in fp32 (the per-sequence terms are summed in order by
/// one thread, so the result is deterministic). The offsets live on the device: a one-thread
/// kernel checks them against the mask sizes; an inconsistent batch writes nothing and raises the
/// optional `d_invalid` flag.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/kernel_validate.cuh>
#include <dynllava/core/cuda/stream_workspace.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/train/budget_loss.hpp>
#include <dynllava/train/cuda/kernel_budget_loss.cuh>
#include <dynllava/train/cuda/square_layout.cuh>

#include <cuda_runtime_api.h>

#include <array>
#include <cmath>
#include <cstddef>

namespace dynllava::cuda {

namespace detail {

inline bool budget_params_ok(const budget_loss_params& p) {
  return p.image_keep_rate >= 0.0 && p.image_keep_rate <= 1.0 && p.output_keep_rate >= 0.0 &&
         p.output_keep_rate <= 1.0 && p.min_output_tokens >= 0 && std::isfinite(p.weight);
}

/// Workspace: the per-sequence terms (forward only) and the validity flag; validates both batches.
inline cudaError_t prepare_budget(void* temp, std::size_t& temp_bytes, std::size_t term_count,
                                  device_span<const index_t> image_indptr, std::size_t image_nnz,
                                  device_span<const index_t> output_indptr, std::size_t output_nnz,
                                  int* d_invalid, cudaStream_t stream, float*& terms, int*& valid,
                                  bool& query) {
  std::array<void*, 2> parts{};
  const std::array<std::size_t, 2> sizes{term_count * sizeof(float), sizeof(int)};
  const workspace_status ws = alias_temporaries(temp, temp_bytes, parts, sizes);
  query = ws == workspace_status::size_query;
  if (query) return cudaSuccess;
  if (ws == workspace_status::too_small) return cudaErrorInvalidValue;
  terms = static_cast<float*>(parts[0]);
  valid = static_cast<int*>(parts[1]);
  const std::size_t bi = image_indptr.empty() ? 0 : image_indptr.size() - 1;
  const std::size_t bo = output_indptr.empty() ? 0 : output_indptr.size() - 1;
  validate_layout_kernel<<<1, 1, 0, stream>>>(image_indptr.data(), bi, image_nnz, 1, 0, 0, nullptr,
                                              valid, false, d_invalid);
  validate_layout_kernel<<<1, 1, 0, stream>>>(output_indptr.data(), bo, output_nnz, 1, 0, 0,
                                              nullptr, valid, true, d_invalid);
  return cudaPeekAtLastError();
}

inline budget_batch make_budget_batch(device_span<const index_t> indptr,
                                      device_span<const float> mask, double target,
                                      index_t min_tokens) {
  return {indptr.data(), mask.data(), indptr.empty() ? 0 : indptr.size() - 1,
          static_cast<float>(target), min_tokens};
}

}  // namespace detail

/// @brief Budget loss forward (see `cpu::budget_loss_forward`).
/// @param[in] temp device workspace, or null to query `temp_bytes`
/// @param[in,out] temp_bytes workspace size; receives the size needed when `temp` is null
/// @param[in] image_indptr [batch_img + 1] device; @param[in] image_mask [num_image_tokens] device
/// @param[in] output_indptr [batch_out + 1] device; @param[in] output_mask [num_output_tokens]
/// device
/// @param[out] loss [1] device: the loss
/// @param[in] params targets, threshold, weight
/// @param[out] d_invalid device int or null: set to 1 when an indptr disagrees with its mask
/// @return `cudaErrorInvalidValue` for bad parameters or a too-small workspace, else the launch
///         status
inline cudaError_t budget_loss_forward(void* temp, std::size_t& temp_bytes,
                                       device_span<const index_t> image_indptr,
                                       device_span<const float> image_mask,
                                       device_span<const index_t> output_indptr,
                                       device_span<const float> output_mask, float* loss,
                                       budget_loss_params params, int* d_invalid,
                                       cudaStream_t stream) {
  if (!detail::budget_params_ok(params) || loss == nullptr) return cudaErrorInvalidValue;
  const auto image = detail::make_budget_batch(image_indptr, image_mask, params.image_keep_rate, 0);
  const auto output = detail::make_budget_batch(output_indptr, output_mask, params.output_keep_rate,
                                                params.min_output_tokens);
  float* terms = nullptr;
  int* valid = nullptr;
  bool query = false;
  const cudaError_t st = detail::prepare_budget(
      temp, temp_bytes, image.batch + output.batch, image_indptr, image_mask.size(), output_indptr,
      output_mask.size(), d_invalid, stream, terms, valid, query);
  if (query || st != cudaSuccess) return st;
  const std::size_t total = image.batch + output.batch;
  if (total > 0) {
    detail::
        budget_terms_kernel<<<detail::row_blocks(total), detail::row_block_threads, 0, stream>>>(
            image, output, valid, terms);
  }
  detail::budget_sum_kernel<<<1, 1, 0, stream>>>(terms, image.batch, output.batch,
                                                 static_cast<float>(params.weight), valid, loss);
  return cudaPeekAtLastError();
}

/// @brief Budget loss gradient w.r.t. both masks (see `cpu::budget_loss_backward`).
/// @param[in] d_loss [1] device upstream gradient, or null for 1
/// @param[out] d_image_mask [num_image_tokens] device; @param[out] d_output_mask
///             [num_output_tokens] device
/// Other parameters as in `budget_loss_forward`.
inline cudaError_t budget_loss_backward(void* temp, std::size_t& temp_bytes,
                                        device_span<const index_t> image_indptr,
                                        device_span<const float> image_mask,
                                        device_span<const index_t> output_indptr,
                                        device_span<const float> output_mask, const float* d_loss,
                                        device_span<float> d_image_mask,
                                        device_span<float> d_output_mask, budget_loss_params params,
                                        int* d_invalid, cudaStream_t stream) {
  if (!detail::budget_params_ok(params) || d_image_mask.size() != image_mask.size() ||
      d_output_mask.size() != output_mask.size()) {
    return cudaErrorInvalidValue;
  }
  const auto image = detail::make_budget_batch(image_indptr, image_mask, params.image_keep_rate, 0);
  const auto output = detail::make_budget_batch(output_indptr, output_mask, params.output_keep_rate,
                                                params.min_output_tokens);
  float* terms = nullptr;
  int* valid = nullptr;
  bool query = false;
  const cudaError_t st =
      detail::prepare_budget(temp, temp_bytes, 0, image_indptr, image_mask.size(), output_indptr,
                             output_mask.size(), d_invalid, stream, terms, valid, query);
  if (query || st != cudaSuccess) return st;
  const std::size_t total = image.batch + output.batch;
  if (total == 0) return cudaSuccess;
  detail::budget_grad_kernel<<<detail::row_blocks(total), detail::row_block_threads, 0, stream>>>(
      image, output, static_cast<float>(params.weight), d_loss, valid, d_image_mask.data(),
      d_output_mask.data());
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

namespace dynllava {

/// @brief Execution-tag entry point (asynchronous; the loss lands in device memory `loss`).
/// @throws dynllava::error on bad parameters, dynllava::cuda_error on a CUDA failure.
inline void budget_loss_forward(cuda::on_stream exec, device_span<const index_t> image_indptr,
                                device_span<const float> image_mask,
                                device_span<const index_t> output_indptr,
                                device_span<const float> output_mask, float* loss,
                                budget_loss_params params = {}, int* d_invalid = nullptr) {
  check_budget_loss_args("budget_loss_forward", {}, 0, 0, {}, 0, 0, params);
  DYNLLAVA_EXPECTS(loss != nullptr, "budget_loss_forward: loss must point to device memory");
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::budget_loss_forward(temp, bytes, image_indptr, image_mask, output_indptr,
                                     output_mask, loss, params, d_invalid, exec.stream);
  });
}

/// Execution-tag entry point (asynchronous). @see budget_loss_forward(cuda::on_stream, ...)
inline void budget_loss_backward(cuda::on_stream exec, device_span<const index_t> image_indptr,
                                 device_span<const float> image_mask,
                                 device_span<const index_t> output_indptr,
                                 device_span<const float> output_mask, const float* d_loss,
                                 device_span<float> d_image_mask, device_span<float> d_output_mask,
                                 budget_loss_params params = {}, int* d_invalid = nullptr) {
  check_budget_loss_args("budget_loss_backward", {}, 0, 0, {}, 0, 0, params);
  DYNLLAVA_EXPECTS(
      d_image_mask.size() == image_mask.size() && d_output_mask.size() == output_mask.size(),
      "budget_loss_backward: gradients must match the masks ({} image, {} output "
      "values), got {} and {}",
      image_mask.size(), output_mask.size(), d_image_mask.size(), d_output_mask.size());
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::budget_loss_backward(temp, bytes, image_indptr, image_mask, output_indptr,
                                      output_mask, d_loss, d_image_mask, d_output_mask, params,
                                      d_invalid, exec.stream);
  });
}

}  // namespace dynllava
