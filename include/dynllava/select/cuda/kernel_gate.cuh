// SPDX-License-Identifier: Apache-2.0
/// @file kernel_gate.cuh
/// @brief `__global__` kernel of the CUDA gates (see device_gate.cuh): the keep decision of every
/// token fused with the ordered compaction into CSR kept positions, in one launch.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/select/cuda/device_score.cuh>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/radix_steps.hpp>

#include <cub/block/block_scan.cuh>

#include <cstddef>
#include <cstdint>

namespace dynllava::cuda::detail {

/// Threads of the gate kernel.
inline constexpr int gate_threads = 512;

/// Keep rule of the argmax gate over `[tokens, 2]` logits: `argmax_keeps(l0, l1)`.
template <class T>
struct argmax_keep_rule {
  const T* logits;
  __device__ bool operator()(index_t i) const {
    const auto j = static_cast<std::size_t>(i);
    return argmax_keeps(widen(logits[2 * j]), widen(logits[2 * j + 1]));
  }
};

/// Keep rule of the threshold gate: `threshold_keeps(score, threshold)`.
template <class T>
struct threshold_keep_rule {
  const T* scores;
  float threshold;
  __device__ bool operator()(index_t i) const {
    return threshold_keeps(widen(scores[static_cast<std::size_t>(i)]), threshold);
  }
};

/// @brief One block: validates `indptr`, decides every token with `keep_of`, writes the optional
/// mask and the kept positions (local to each sequence, ascending) with their CSR offsets.
/// An invalid `indptr` writes an all-zero `out_indptr`, no mask, no position, and raises
/// `*invalid_out` (nullable).
template <int Threads, class Keep>
__global__ void __launch_bounds__(Threads)
    gate_compact_kernel(Keep keep_of, const index_t* indptr, std::size_t batch, index_t tokens,
                        std::uint8_t* mask, index_t* out_indptr, index_t* out_positions,
                        int* invalid_out) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  bool ok = true;
  for (std::size_t b = threadIdx.x; b < batch; b += Threads) ok = ok && indptr[b + 1] >= indptr[b];
  if (threadIdx.x == 0) ok = ok && indptr[0] == 0 && indptr[batch] == tokens;
  if (__syncthreads_and(ok ? 1 : 0) == 0) {
    for (std::size_t b = threadIdx.x; b <= batch; b += Threads) out_indptr[b] = 0;
    if (threadIdx.x == 0 && invalid_out != nullptr) *invalid_out = 1;
    return;
  }
  index_t carry = 0;
  for (index_t base = 0; base < tokens; base += Threads) {
    const index_t i = base + static_cast<index_t>(threadIdx.x);
    const bool inside = i < tokens;
    const bool keep = inside && keep_of(i);
    if (inside && mask != nullptr) mask[i] = keep ? 1 : 0;
    index_t slot = 0;
    index_t tile_kept = 0;
    scan_t(scan_storage).ExclusiveSum(keep ? 1 : 0, slot, tile_kept);
    __syncthreads();
    if (inside) {
      const std::size_t s = dynllava::detail::sequence_of(indptr, batch, i);
      if (keep) out_positions[carry + slot] = i - indptr[s];
      if (i == indptr[s]) {  // first token of s: s and the empty sequences before it start here
        for (std::size_t e = dynllava::detail::first_sequence_at(indptr, s, i); e <= s; ++e) {
          out_indptr[e] = carry + slot;
        }
      }
    }
    carry += tile_kept;
  }
  if (threadIdx.x == 0) {  // the end, and the empty sequences at the end
    for (std::size_t e = dynllava::detail::first_sequence_at(indptr, batch, tokens); e <= batch;
         ++e) {
      out_indptr[e] = carry;
    }
  }
}

}  // namespace dynllava::cuda::detail
