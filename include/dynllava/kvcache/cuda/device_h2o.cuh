// SPDX-License-Identifier: Apache-2.0
/// @file device_h2o.cuh
/// @brief H2O's kept lists on CUDA (the twin of `h2o_policy::retain`): for each sequence of a
/// layer, the `recent` newest held tokens plus the heaviest hitters among the older ones by
/// accumulated attention (ties to the earlier token), `h2o_budget` tokens in all. The heavy
/// hitters are a `cuda::topk` over each sequence's scores with its recent window masked to NaN
/// (the lowest rank); the kept lists feed `cuda::retain`.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_scan_batch.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/kvcache/kv_steps.hpp>
#include <dynllava/select/cuda/device_topk.cuh>

#include <cub/block/block_scan.cuh>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>

namespace dynllava::cuda {

/// H2O's parameters, as `h2o_policy` holds them.
struct h2o_parameters {
  double ratio = 0.5;               ///< in [0, 1]
  index_t recent = 32;              ///< >= 0
  index_t uncompressed_layers = 0;  ///< >= 0
};

namespace detail {

/// @brief One block: per sequence, the budget, the recent window and the older candidates;
/// writes `kept_indptr` (scan of the budgets), the number of older candidates `older` and of
/// heavy hitters `heavy`. Checks that `scores_indptr` matches `lengths` (else `*failed = 1`).
template <int Threads>
__global__ void __launch_bounds__(Threads)
    h2o_plan_kernel(const index_t* lengths, const index_t* appended, const index_t* scores_indptr,
                    std::size_t batch, std::size_t tokens, index_t layer, h2o_parameters p,
                    index_t* kept_indptr, index_t* older_counts, index_t* heavy, int* failed,
                    int* invalid_out) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  bool ok = true;
  if (threadIdx.x == 0) {
    ok = scores_indptr[0] == 0 && static_cast<std::size_t>(scores_indptr[batch]) == tokens;
  }
  const index_t total = block_scan_batch<Threads>(
      batch,
      [&](std::size_t b) {
        const index_t held = lengths[b];
        ok = ok && scores_indptr[b + 1] >= scores_indptr[b] &&
             scores_indptr[b + 1] - scores_indptr[b] == held;
        const index_t keep = dynllava::detail::h2o_budget(layer, held, appended[b], p.ratio,
                                                          p.recent, p.uncompressed_layers);
        const dynllava::detail::h2o_split split =
            dynllava::detail::split_h2o_budget(held, keep, p.recent);
        older_counts[b] = split.older;
        heavy[b] = split.heavy;
        return keep;
      },
      [&](std::size_t b, index_t before) { kept_indptr[b] = before; }, scan_storage);
  if (threadIdx.x == 0) kept_indptr[batch] = total;
  if (__syncthreads_and(ok ? 1 : 0) == 0 && threadIdx.x == 0) {
    *failed = 1;
    if (invalid_out != nullptr) *invalid_out = 1;
  }
}

/// A quiet NaN of the score type: the lowest rank, below every score.
template <class T>
__device__ inline T lowest_rank_score() {
  return static_cast<T>(__int_as_float(0x7fc00000));
}

/// @brief Grid over the batch: the candidates' scores for the heavy-hitter top-k: each
/// sequence's older tokens keep their score, its recent window gets NaN, which ranks below every
/// score and, among NaNs, below every earlier token. The top `heavy[b] <= older[b]` are then
/// exactly the heavy hitters among the older tokens.
template <class T>
__global__ void h2o_mask_recent_kernel(const T* scores, const index_t* scores_indptr,
                                       const index_t* older_counts, std::size_t batch,
                                       T* candidates, const int* failed) {
  if (*failed != 0) return;
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t begin = scores_indptr[b];
    const index_t n = scores_indptr[b + 1] - begin;
    for (index_t i = threadIdx.x; i < n; i += blockDim.x) {
      candidates[begin + i] = i < older_counts[b] ? scores[begin + i] : lowest_rank_score<T>();
    }
  }
}

/// @brief Grid over the batch: the kept list of each sequence, its heavy hitters (ascending, from
/// the top-k) then its recent window. When the plan or the top-k failed (`*failed`), it writes
/// `kept_indptr[0] = -1` instead, which `cuda::retain` rejects, and raises `*invalid_out`.
template <int = 0>
__global__ void h2o_merge_kernel(const index_t* lengths, index_t* kept_indptr,
                                 const index_t* heavy_indptr, const index_t* heavy_positions,
                                 std::size_t batch, index_t* kept, const int* failed,
                                 int* invalid_out) {
  if (*failed != 0) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      kept_indptr[0] = -1;
      if (invalid_out != nullptr) *invalid_out = 1;
    }
    return;
  }
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    index_t* out = kept + kept_indptr[b];
    const index_t heavy = heavy_indptr[b + 1] - heavy_indptr[b];
    const index_t count = kept_indptr[b + 1] - kept_indptr[b];
    for (index_t j = threadIdx.x; j < count; j += blockDim.x) {
      out[j] = j < heavy ? heavy_positions[heavy_indptr[b] + j]
                         : dynllava::detail::h2o_recent_position(lengths[b], count, heavy, j);
    }
  }
}

}  // namespace detail

/// @brief Device-level H2O kept lists of layer `layer`.
/// @param[in] temp, temp_bytes workspace (null `temp`: size query)
/// @param[in] lengths, appended [batch] device: tokens held / ever appended per sequence
/// @param[in] scores ragged device accumulated attention of the held tokens (`indptr` [batch + 1]
///            must match `lengths`), read-only
/// @param[in] max_length host-known bound of every sequence's held length (the top-k's regime)
/// @param[out] kept_indptr [batch + 1] device; @param[out] kept [>= held tokens] device
/// @param[out] d_invalid device int or null: raised when `scores.indptr` does not match
///             `lengths` or a held length exceeds `max_length`; then `kept_indptr[0]` is -1,
///             which `cuda::retain` refuses (nothing is evicted)
/// @return `cudaErrorInvalidValue` on invalid parameters or sizes (nothing launched)
template <class T>
requires device_score<T> cudaError_t
h2o_kept(void* temp, std::size_t& temp_bytes, device_span<const index_t> lengths,
         device_span<const index_t> appended, device_ragged<const T> scores, index_t layer,
         const h2o_parameters& p, index_t max_length, device_span<index_t> kept_indptr,
         device_span<index_t> kept, int* d_invalid, cudaStream_t stream) {
  const std::size_t batch = lengths.size();
  const std::size_t tokens = scores.values.size();
  if (!(p.ratio >= 0.0 && p.ratio <= 1.0) || p.recent < 0 || p.uncompressed_layers < 0 ||
      appended.size() != batch || scores.indptr.size() != batch + 1 ||
      kept_indptr.size() != batch + 1 || kept.size() < tokens || max_length < 0 ||
      max_length > dynllava::detail::topk_row_max) {
    return cudaErrorInvalidValue;
  }
  // the heavy-hitter top-k over the masked scores (same CSR as `scores`), and its workspace
  std::size_t topk_bytes = 0;
  const auto budget_shape =
      topk_budget<device_space>::keep_per_sequence(device_span<const index_t>(nullptr, batch));
  if (const cudaError_t e = topk(nullptr, topk_bytes, scores, max_length, budget_shape,
                                 device_span<index_t>(nullptr, batch + 1),
                                 device_span<index_t>(nullptr, tokens), {}, nullptr, stream);
      e != cudaSuccess) {
    return e;
  }
  std::array<void*, 7> parts{};
  const std::array<std::size_t, 7> sizes{sizeof(int),
                                         batch * sizeof(index_t),        // older counts
                                         batch * sizeof(index_t),        // heavy counts
                                         tokens * sizeof(T),             // masked scores
                                         (batch + 1) * sizeof(index_t),  // heavy_indptr
                                         tokens * sizeof(index_t),       // heavy positions
                                         topk_bytes};
  const workspace_status ws = alias_temporaries(temp, temp_bytes, parts, sizes);
  if (ws == workspace_status::size_query) return cudaSuccess;
  if (ws == workspace_status::too_small) return cudaErrorInvalidValue;
  if (batch == 0) return cudaMemsetAsync(kept_indptr.data(), 0, sizeof(index_t), stream);
  auto* const failed = static_cast<int*>(parts[0]);
  auto* const older_counts = static_cast<index_t*>(parts[1]);
  auto* const heavy = static_cast<index_t*>(parts[2]);
  auto* const candidates = static_cast<T*>(parts[3]);
  auto* const heavy_indptr = static_cast<index_t*>(parts[4]);
  auto* const heavy_positions = static_cast<index_t*>(parts[5]);
  if (const cudaError_t e = cudaMemsetAsync(failed, 0, sizeof(int), stream); e != cudaSuccess) {
    return e;
  }
  constexpr int threads = 256;
  detail::h2o_plan_kernel<threads><<<1, threads, 0, stream>>>(
      lengths.data(), appended.data(), scores.indptr.data(), batch, tokens, layer, p,
      kept_indptr.data(), older_counts, heavy, failed, d_invalid);
  const auto grid = static_cast<unsigned>(std::min<std::size_t>(batch, 1u << 16));
  detail::h2o_mask_recent_kernel<<<grid, threads, 0, stream>>>(
      scores.values.data(), scores.indptr.data(), older_counts, batch, candidates, failed);
  if (const cudaError_t e = cudaPeekAtLastError(); e != cudaSuccess) return e;
  // A failed plan leaves the candidates unspecified; the merge then refuses to write lists. The
  // top-k reports its own failures (a row above `max_length`) into the same flag.
  const device_ragged<const T> masked{scores.indptr, device_span<const T>(candidates, tokens)};
  std::size_t bytes = topk_bytes;
  if (const cudaError_t e = topk(
          parts[6], bytes, masked, max_length,
          topk_budget<device_space>::keep_per_sequence(device_span<const index_t>(heavy, batch)),
          device_span<index_t>(heavy_indptr, batch + 1),
          device_span<index_t>(heavy_positions, tokens), {}, failed, stream);
      e != cudaSuccess) {
    return e;
  }
  detail::h2o_merge_kernel<<<grid, threads, 0, stream>>>(lengths.data(), kept_indptr.data(),
                                                         heavy_indptr, heavy_positions, batch,
                                                         kept.data(), failed, d_invalid);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda
