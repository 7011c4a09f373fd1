// SPDX-License-Identifier: Apache-2.0
/// @file device_topk.cuh
/// @brief Batched budgeted top-k on CUDA: the device-level call (two-phase workspace, returns
/// `cudaError_t`, never throws, never allocates, never synchronises) and the throwing
/// `on_stream` entry point.
///
/// Semantics equal the CPU twin `cpu::topk` (select/topk.hpp) bit for bit: each sequence keeps
/// its `k_b` largest 64-bit ranking keys (score descending, ties by position, NaN lowest, both
/// zeros equal) and its kept positions come out ascending. fp16 and bf16 scores are ranked by
/// their exact fp32 values, as the CPU twin ranks the widened scores.
///
/// Regimes (`detail::topk_regime_for(max_length)`): rows of at most 8192 candidates take one
/// block per sequence with the row's keys in shared memory: **one launch** for batches of at most
/// `detail::topk_fused_batch_max` (1024) sequences, each block checking the batch and finding its
/// offset itself, else a plan kernel and the select (2 launches); longer rows, up to
/// `detail::topk_row_max`, are split into tiles of 4096 over many blocks (a plan, a start, 4
/// histogram/choice pass pairs, tile counts, tile prefixes and the write: 12 launches).
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/stream_workspace.cuh>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/select/cuda/device_score.cuh>
#include <dynllava/select/cuda/kernel_topk.cuh>
#include <dynllava/select/radix_steps.hpp>
#include <dynllava/select/topk_types.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace dynllava::cuda {

namespace detail {

/// @brief Why a top-k call's arguments are invalid, checked on the host (nothing on the device
/// is read); null when they are valid.
template <class T>
const char* topk_argument_error(device_ragged<const T> scores, index_t max_length,
                                const topk_budget<device_space>& budget,
                                device_span<index_t> out_indptr,
                                device_span<index_t> out_positions) {
  const std::size_t batch = scores.batch();
  if (max_length < 0 || max_length > dynllava::detail::topk_row_max) {
    return "max_length must be in [0, 65535 * 4096]";
  }
  if (batch > static_cast<std::size_t>(std::numeric_limits<index_t>::max())) {
    return "the batch must have fewer than 2^31 sequences";
  }
  if (scores.indptr.empty() && !scores.values.empty()) {
    return "an empty indptr describes an empty batch, but scores were given";
  }
  if (scores.values.size() > static_cast<std::size_t>(std::numeric_limits<index_t>::max())) {
    return "more than 2^31 - 1 scores";
  }
  if (out_indptr.size() != batch + 1) return "out_indptr must have batch + 1 entries";
  if (out_positions.size() < scores.values.size()) {
    return "out_positions must hold one entry per score";
  }
  switch (budget.kind) {
    case budget_kind::ratio:
      if (!(budget.ratio >= 0.0 && budget.ratio <= 1.0)) return "ratio must be in [0, 1]";
      return nullptr;
    case budget_kind::count:
      return budget.count < 0 ? "k must be >= 0" : nullptr;
    case budget_kind::per_sequence:
      return budget.counts.size() != batch ? "counts must have one entry per sequence" : nullptr;
  }
  return "unknown budget kind";
}

}  // namespace detail

/// @brief Device-level batched budgeted top-k, enqueued on `stream`.
/// @tparam T score type (`device_score`)
/// @param[in] temp device workspace, or null to query its size into `temp_bytes`
/// @param[in,out] temp_bytes size of `temp`; receives the size needed when `temp` is null
/// @param[in] scores ragged device scores (`indptr` [batch + 1], `values` [tokens]), read-only
/// @param[in] max_length host-known upper bound of every sequence's length (chooses the regime);
///            a longer sequence invalidates the call
/// @param[in] budget how many tokens each sequence keeps (`counts` in device memory)
/// @param[out] out_indptr [batch + 1] device offsets of the kept positions (`out_indptr[batch]`
///             is the kept total)
/// @param[out] out_positions [>= tokens] device; each sequence's kept positions, local and
///             ascending
/// @param[in] options tie-break rule
/// @param[out] d_invalid device int or null: set to 1 when the device finds the batch invalid (an
///             inconsistent `indptr`, a row longer than `max_length`, a budget outside
///             `[0, n_b]`); then `out_indptr` is all zeros and no position is written
/// @param[in] stream CUDA stream
/// @return `cudaErrorInvalidValue` on an invalid argument or a too small workspace (nothing
///         launched), else the status of the last launch
template <class T>
requires device_score<T> cudaError_t topk(void* temp, std::size_t& temp_bytes,
                                          device_ragged<const T> scores, index_t max_length,
                                          const topk_budget<device_space>& budget,
                                          device_span<index_t> out_indptr,
                                          device_span<index_t> out_positions, topk_options options,
                                          int* d_invalid, cudaStream_t stream) {
  namespace dd = dynllava::detail;
  if (detail::topk_argument_error(scores, max_length, budget, out_indptr, out_positions) !=
      nullptr) {
    return cudaErrorInvalidValue;
  }
  const std::size_t batch = scores.batch();
  const bool tiled = dd::topk_regime_for(max_length) == dd::topk_regime::blocks_per_sequence;
  const index_t tiles = tiled ? dd::tiles_for(max_length, dd::topk_tile_items) : 0;
  std::array<void*, 4> parts{};
  const std::array<std::size_t, 4> sizes{
      sizeof(int), tiled ? batch * sizeof(dd::radix_select_state) : 0,
      tiled ? batch * dd::radix_digit_bins * sizeof(std::uint32_t) : 0,
      tiled ? batch * static_cast<std::size_t>(tiles) * sizeof(detail::topk_tile_counts) : 0};
  const workspace_status ws = alias_temporaries(temp, temp_bytes, parts, sizes);
  if (ws == workspace_status::size_query) return cudaSuccess;
  if (ws == workspace_status::too_small) return cudaErrorInvalidValue;
  if (scores.indptr.empty()) {  // an empty batch without offsets: nothing to check or select
    return cudaMemsetAsync(out_indptr.data(), 0, sizeof(index_t), stream);
  }
  auto* const valid = static_cast<int*>(parts[0]);
  constexpr int threads = detail::topk_threads;
  const detail::topk_budget_args budget_args{budget.kind, budget.ratio, budget.count,
                                             budget.counts.data()};
  const tie_break tie = options.tie;
  if (!tiled && batch > 0 && batch <= dd::topk_fused_batch_max) {  // one launch
    const index_t capacity = std::max<index_t>(max_length, 1);
    detail::topk_fused_kernel<T, threads>
        <<<static_cast<unsigned>(batch), threads,
           static_cast<std::size_t>(capacity) * sizeof(std::uint32_t), stream>>>(
            scores.values.data(), scores.indptr.data(), batch, scores.values.size(), max_length,
            budget_args, out_indptr.data(), out_positions.data(), tie, capacity, d_invalid);
    return cudaPeekAtLastError();
  }
  detail::topk_plan_kernel<threads>
      <<<1, threads, 0, stream>>>(scores.indptr.data(), batch, scores.values.size(), max_length,
                                  budget_args, out_indptr.data(), valid, d_invalid);
  if (const cudaError_t e = cudaPeekAtLastError(); e != cudaSuccess || batch == 0) return e;
  if (!tiled) {
    const index_t capacity = std::max<index_t>(max_length, 1);
    const auto grid = static_cast<unsigned>(std::clamp<std::size_t>(batch, 1, 1u << 20));
    detail::topk_block_kernel<T, threads>
        <<<grid, threads, static_cast<std::size_t>(capacity) * sizeof(std::uint32_t), stream>>>(
            scores.values.data(), scores.indptr.data(), batch, out_indptr.data(),
            out_positions.data(), tie, capacity, valid);
    return cudaPeekAtLastError();
  }
  auto* const states = static_cast<dd::radix_select_state*>(parts[1]);
  auto* const hist = static_cast<std::uint32_t*>(parts[2]);
  auto* const counts = static_cast<detail::topk_tile_counts*>(parts[3]);
  const dim3 tile_grid(static_cast<unsigned>(batch), static_cast<unsigned>(tiles));
  const auto seq_grid = static_cast<unsigned>(batch);
  const auto start_grid = static_cast<unsigned>(
      std::min<std::size_t>((batch * dd::radix_digit_bins + threads - 1) / threads, 4096));
  detail::topk_start_kernel<<<start_grid, threads, 0, stream>>>(
      scores.indptr.data(), batch, out_indptr.data(), states, hist, valid);
  for (int shift = dd::radix_first_shift; shift >= 0; shift -= dd::radix_digit_bits) {
    detail::topk_tile_histogram_kernel<T, threads><<<tile_grid, threads, 0, stream>>>(
        scores.values.data(), scores.indptr.data(), states, hist, shift, valid);
    detail::topk_choose_kernel<threads>
        <<<seq_grid, threads, 0, stream>>>(states, hist, shift, valid);
  }
  detail::topk_tile_count_kernel<T, threads><<<tile_grid, threads, 0, stream>>>(
      scores.values.data(), scores.indptr.data(), out_indptr.data(), states, tiles, counts, valid);
  detail::topk_tile_scan_kernel<threads><<<seq_grid, threads, 0, stream>>>(
      scores.indptr.data(), out_indptr.data(), states, tiles, tie, counts, valid);
  detail::topk_tile_write_kernel<T, threads><<<tile_grid, threads, 0, stream>>>(
      scores.values.data(), scores.indptr.data(), out_indptr.data(), states, tiles, tie, counts,
      out_positions.data(), valid);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

namespace dynllava {

/// @brief Execution-tag entry point: batched budgeted top-k on a CUDA stream (asynchronous; the
/// workspace is allocated and freed in stream order). @see cuda::topk
/// @throws dynllava::error naming the argument on an invalid argument, dynllava::cuda_error on
///         a CUDA failure. Faults found on the device (see `d_invalid`) do not throw.
template <class T>
requires cuda::device_score<T>
void topk(cuda::on_stream exec, device_ragged<const T> scores, index_t max_length,
          const topk_budget<device_space>& budget, device_span<index_t> out_indptr,
          device_span<index_t> out_positions, topk_options options = {}, int* d_invalid = nullptr) {
  if (const char* why =
          cuda::detail::topk_argument_error(scores, max_length, budget, out_indptr, out_positions);
      why != nullptr) {
    DYNLLAVA_FAIL(
        "topk (CUDA): {} (batch {}, tokens {}, max_length {}, out_indptr {}, out_positions {}, "
        "ratio {}, k {}, counts {})",
        why, scores.batch(), scores.values.size(), max_length, out_indptr.size(),
        out_positions.size(), budget.ratio, budget.count, budget.counts.size());
  }
  cuda::detail::with_stream_workspace(exec.stream, [&](void* temp, std::size_t& bytes) {
    return cuda::topk(temp, bytes, scores, max_length, budget, out_indptr, out_positions, options,
                      d_invalid, exec.stream);
  });
}

}  // namespace dynllava
