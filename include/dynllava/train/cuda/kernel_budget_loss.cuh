// SPDX-License-Identifier: Apache-2.0
/// @file kernel_budget_loss.cuh
/// @brief `__global__` kernels of the budget loss (API: device_budget_loss.cuh).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_reduce.cuh>
#include <dynllava/train/budget_loss.hpp>

#include <cstddef>

namespace dynllava::cuda::detail {

/// Which of the two ragged batches a block works on.
struct budget_batch {
  const index_t* indptr;  ///< [batch + 1] device
  const float* mask;      ///< [nnz] device
  std::size_t batch;
  float target;
  index_t min_tokens;
};

/// Mean of one sequence's mask (the whole block takes part; all threads receive it).
__device__ inline float sequence_mean(const budget_batch& in, std::size_t b, index_t& n,
                                      block_reduce_storage& s) {
  const index_t first = in.indptr[b];
  n = in.indptr[b + 1] - first;
  float acc = 0.0f;
  for (index_t j = static_cast<index_t>(threadIdx.x); j < n;
       j += static_cast<index_t>(blockDim.x)) {
    acc += in.mask[first + j];
  }
  acc = block_sum(acc, s);
  return n > 0 ? acc / static_cast<float>(n) : 0.0f;
}

/// Block `k` < image.batch handles image sequence k, the next blocks the output sequences:
/// `terms[k] = (target - mean)^2` or 0 when inactive.
template <int = 0>
__global__ void budget_terms_kernel(budget_batch image, budget_batch output, const int* valid,
                                    float* terms) {
  __shared__ block_reduce_storage storage;
  if (*valid == 0) return;
  const std::size_t total = image.batch + output.batch;
  for (std::size_t k = blockIdx.x; k < total; k += gridDim.x) {
    const bool is_image = k < image.batch;
    const budget_batch& in = is_image ? image : output;
    const std::size_t b = is_image ? k : k - image.batch;
    index_t n = 0;
    const float mean = sequence_mean(in, b, n, storage);
    if (threadIdx.x == 0) {
      const float diff = in.target - mean;
      terms[k] = budget_term_active(n, in.min_tokens) ? diff * diff : 0.0f;
    }
  }
}

/// One thread sums the terms in order: `loss = weight * (sum_img / B_img + sum_out / B_out)`.
template <int = 0>
__global__ void budget_sum_kernel(const float* terms, std::size_t image_batch,
                                  std::size_t output_batch, float weight, const int* valid,
                                  float* loss) {
  if (blockIdx.x != 0 || threadIdx.x != 0 || *valid == 0) return;
  float img = 0.0f, out = 0.0f;
  for (std::size_t k = 0; k < image_batch; ++k) img += terms[k];
  for (std::size_t k = 0; k < output_batch; ++k) out += terms[image_batch + k];
  const float a = image_batch > 0 ? img / static_cast<float>(image_batch) : 0.0f;
  const float c = output_batch > 0 ? out / static_cast<float>(output_batch) : 0.0f;
  *loss = weight * (a + c);
}

/// Gradients: one block per sequence (image sequences first), grid-stride.
/// `d_loss` device scalar or null (= 1).
template <int = 0>
__global__ void budget_grad_kernel(budget_batch image, budget_batch output, float weight,
                                   const float* d_loss, const int* valid, float* d_image,
                                   float* d_output) {
  __shared__ block_reduce_storage storage;
  if (*valid == 0) return;
  const float scale = weight * (d_loss != nullptr ? *d_loss : 1.0f);
  const std::size_t total = image.batch + output.batch;
  for (std::size_t k = blockIdx.x; k < total; k += gridDim.x) {
    const bool is_image = k < image.batch;
    const budget_batch& in = is_image ? image : output;
    const std::size_t b = is_image ? k : k - image.batch;
    float* grad = is_image ? d_image : d_output;
    index_t n = 0;
    const float mean = sequence_mean(in, b, n, storage);
    const float g = budget_term_active(n, in.min_tokens)
                        ? scale * 2.0f * (mean - in.target) /
                              (static_cast<float>(in.batch) * static_cast<float>(n))
                        : 0.0f;
    const index_t first = in.indptr[b];
    for (index_t j = static_cast<index_t>(threadIdx.x); j < n;
         j += static_cast<index_t>(blockDim.x)) {
      grad[first + j] = g;
    }
  }
}

}  // namespace dynllava::cuda::detail
