// SPDX-License-Identifier: Apache-2.0
/// @file device_fastv.cuh
/// @brief FastV's scorer on CUDA, the twin of `fastv_scorer` (score/fastv_scorer.hpp): the score
/// of a candidate is the attention the last token pays to it at layer K, averaged over heads,
/// `mean_h softmax_j(q_h . k_hj / sqrt(head_dim))[j]` over the whole context. One block per
/// sequence; per head it writes the logits of every context key to the workspace, reduces their
/// maximum and exponential sum, and accumulates the probabilities; fp32 arithmetic throughout
/// (the CPU twin accumulates the dot products and sums in double: results agree to rounding).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_reduce.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/kernel_validate.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/score/concepts.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>

namespace dynllava::cuda {

namespace detail {

/// @brief Grid over the batch, a block per sequence: FastV scores of its candidates. A candidate
/// outside its sequence's context gets score 0 and raises `*invalid_out` (nullable). Runs only
/// when `*valid` (the layout check of both offsets, `validate_layout_kernel`) is 1.
template <int = 0>
__global__ void fastv_kernel(const float* queries, const float* keys, const index_t* key_indptr,
                             const index_t* candidates, const index_t* candidate_indptr,
                             std::size_t batch, index_t heads, index_t head_dim, float* logits,
                             float* probs, float* scores, const int* valid, int* invalid_out) {
  __shared__ block_reduce_storage storage;
  if (*valid == 0) return;  // offsets that disagree with the sizes: write nothing
  const auto hd = static_cast<std::size_t>(head_dim);
  const std::size_t width = static_cast<std::size_t>(heads) * hd;
  const float scale = rsqrtf(static_cast<float>(head_dim));
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const auto first = static_cast<std::size_t>(key_indptr[b]);
    const auto n = static_cast<std::size_t>(key_indptr[b + 1] - key_indptr[b]);
    const index_t c0 = candidate_indptr[b];
    const index_t c1 = candidate_indptr[b + 1];
    if (c1 == c0) continue;
    float* const logit = logits + first;
    float* const prob = probs + first;
    for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) prob[j] = 0.0f;
    const float* q = queries + b * width;
    for (std::size_t h = 0; h < static_cast<std::size_t>(heads); ++h) {
      float m = -INFINITY;
      for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) {
        const float* k = keys + (first + j) * width + h * hd;
        float dot = 0.0f;
        for (std::size_t c = 0; c < hd; ++c) dot += q[h * hd + c] * k[c];
        logit[j] = dot * scale;
        m = fmaxf(m, logit[j]);
      }
      int arg = 0;
      block_max_arg(m, arg, storage);
      float sum = 0.0f;
      for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) sum += expf(logit[j] - m);
      const float total = block_sum(sum, storage);
      for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) {
        prob[j] += expf(logit[j] - m) / total;  // each thread owns its j: no race
      }
    }
    __syncthreads();  // every prob[j] is complete
    for (index_t c = c0 + static_cast<index_t>(threadIdx.x); c < c1;
         c += static_cast<index_t>(blockDim.x)) {
      const index_t j = candidates[c];
      const bool inside = j >= 0 && static_cast<std::size_t>(j) < n;
      if (!inside && invalid_out != nullptr) atomicExch(invalid_out, 1);
      scores[c] = inside ? prob[j] / static_cast<float>(heads) : 0.0f;
    }
    __syncthreads();  // `storage` and the workspace rows are reused by the next sequence
  }
}

}  // namespace detail

/// @brief Device-level FastV scores.
/// @param[in] temp, temp_bytes workspace (null `temp`: size query), 2 floats per context row
/// @param[in] queries [batch, heads * head_dim] device: the last token's query per sequence
/// @param[in] keys ragged `[context, heads * head_dim]` device (RoPE applied); its offsets are
///            checked on the device against `keys.rows()`
/// @param[in] candidates ragged device: context rows (local to each sequence) to score; offsets
///            checked on the device against `candidates.values.size()`
/// @param[out] scores [candidates] device: head-averaged attention probabilities
/// @param[out] d_invalid device int or null: raised by a candidate outside its context (scored
///             0), or by offsets that disagree with the sizes (then nothing is written)
/// @return `cudaErrorInvalidValue` on inconsistent shapes or a too small workspace
inline cudaError_t fastv_scores(void* temp, std::size_t& temp_bytes, index_t heads,
                                index_t head_dim, device_span<const float> queries,
                                ragged_rows<const float, device_space> keys,
                                ragged_span<const index_t, device_space> candidates,
                                device_span<float> scores, int* d_invalid, cudaStream_t stream) {
  if (heads <= 0 || head_dim <= 0 ||
      static_cast<long long>(heads) * head_dim > std::numeric_limits<index_t>::max() ||
      keys.width != heads * head_dim || candidates.batch() != keys.batch() ||
      queries.size() != keys.batch() * static_cast<std::size_t>(keys.width) ||
      scores.size() != candidates.values.size() || keys.indptr.empty()) {
    return cudaErrorInvalidValue;
  }
  const std::size_t rows = keys.rows();
  std::array<void*, 3> parts{};
  const workspace_status ws = alias_temporaries(
      temp, temp_bytes, parts, {rows * sizeof(float), rows * sizeof(float), sizeof(int)});
  if (ws == workspace_status::size_query) return cudaSuccess;
  if (ws == workspace_status::too_small) return cudaErrorInvalidValue;
  const std::size_t batch = keys.batch();
  if (batch == 0 || candidates.values.empty()) return cudaSuccess;
  auto* const valid = static_cast<int*>(parts[2]);
  detail::validate_layout_kernel<<<1, 1, 0, stream>>>(keys.indptr.data(), batch, rows, 0, 0, 0,
                                                      nullptr, valid, false, d_invalid);
  detail::validate_layout_kernel<<<1, 1, 0, stream>>>(candidates.indptr.data(), batch,
                                                      candidates.values.size(), 0, 0, 0, nullptr,
                                                      valid, true, d_invalid);
  detail::
      fastv_kernel<<<static_cast<unsigned>(std::min<std::size_t>(batch, 65535)), 256, 0, stream>>>(
          queries.data(), keys.values.data(), keys.indptr.data(), candidates.values.data(),
          candidates.indptr.data(), batch, heads, head_dim, static_cast<float*>(parts[0]),
          static_cast<float*>(parts[1]), scores.data(), valid, d_invalid);
  return cudaPeekAtLastError();
}

/// @brief The CUDA model of `attention_scorer<S, cuda::on_stream>`: FastV scores in a caller
/// workspace (sized by `workspace_bytes(context_rows)`). Non-owning.
struct fastv_device_scorer {
  index_t heads = 32;
  index_t head_dim = 128;

  /// The width of the queries and keys it reads: `heads * head_dim`.
  long long width() const noexcept { return static_cast<long long>(heads) * head_dim; }
  void* temp = nullptr;
  std::size_t temp_bytes = 0;
  int* d_invalid = nullptr;  ///< raised by a candidate outside its context

  /// Workspace bytes for `context_rows` keys in all.
  std::size_t workspace_bytes(std::size_t context_rows) const noexcept {
    std::size_t bytes = 0;
    std::array<void*, 3> parts{};
    (void)alias_temporaries(
        nullptr, bytes, parts,
        {context_rows * sizeof(float), context_rows * sizeof(float), sizeof(int)});
    return bytes;
  }

  /// @throws dynllava::error on inconsistent shapes or a too small workspace,
  ///         dynllava::cuda_error on a launch failure.
  void score(on_stream exec, device_span<const float> queries,
             ragged_rows<const float, device_space> keys,
             ragged_span<const index_t, device_space> candidates, device_span<float> out) const {
    DYNLLAVA_EXPECTS(heads > 0 && head_dim > 0 && keys.width == heads * head_dim,
                     "cuda::fastv_device_scorer: keys must have width heads * head_dim = {} * {}, "
                     "got {}",
                     heads, head_dim, keys.width);
    DYNLLAVA_EXPECTS(
        queries.size() == keys.batch() * static_cast<std::size_t>(keys.width) &&
            candidates.batch() == keys.batch() && out.size() == candidates.values.size(),
        "cuda::fastv_device_scorer: queries ({} values), candidates ({} sequences) "
        "and scores ({}) must match the keys' {} sequences and {} candidates",
        queries.size(), candidates.batch(), out.size(), keys.batch(), candidates.values.size());
    const std::size_t needed = workspace_bytes(keys.rows());
    DYNLLAVA_EXPECTS(temp != nullptr && temp_bytes >= needed,
                     "cuda::fastv_device_scorer: the workspace must hold {} bytes, got {}", needed,
                     temp == nullptr ? 0 : temp_bytes);
    std::size_t bytes = temp_bytes;
    DYNLLAVA_CUDA_TRY(fastv_scores(temp, bytes, heads, head_dim, queries, keys, candidates, out,
                                   d_invalid, exec.stream));
  }
};
static_assert(attention_scorer<fastv_device_scorer, on_stream>);
static_assert(!attention_scorer<fastv_device_scorer, host_t>);

}  // namespace dynllava::cuda
