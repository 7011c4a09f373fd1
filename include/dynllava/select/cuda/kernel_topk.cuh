// SPDX-License-Identifier: Apache-2.0
/// @file kernel_topk.cuh
/// @brief `__global__` kernels of the batched top-k (see device_topk.cuh for the API). The
/// arithmetic lives in select/radix_steps.hpp, shared with the CPU tests.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/select/cuda/device_score.cuh>
#include <dynllava/select/radix_steps.hpp>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cstddef>
#include <cstdint>

namespace dynllava::cuda::detail {

using dynllava::detail::radix_digit_bins;
using dynllava::detail::radix_select_state;

/// Threads per block of every top-k kernel (one per histogram bin).
inline constexpr int topk_threads = 256;
static_assert(topk_threads >= static_cast<int>(radix_digit_bins));

template <class T>
__device__ inline std::uint32_t key_of(const T* scores, std::size_t i) {
  return score_key(widen(scores[i]));
}

/// Budget of the top-k as kernel arguments (`topk_budget` without the span type).
struct topk_budget_args {
  budget_kind kind;
  double ratio;
  index_t count;
  const index_t* counts;  ///< [batch] device, or null unless `kind == per_sequence`
};

/// @brief One block: checks the batch and writes `out_indptr` from the budgets.
/// `*valid` becomes 1, or 0 on an invalid `indptr` (first entry, monotonicity, last entry equal
/// to `tokens`), a row longer than `max_length` or a budget outside `[0, n_b]`; then
/// `out_indptr` is all zeros and `*invalid_out` (nullable) is raised to 1.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    topk_plan_kernel(const index_t* indptr, std::size_t batch, std::size_t tokens,
                     index_t max_length, topk_budget_args budget, index_t* out_indptr, int* valid,
                     int* invalid_out) {
  using scan_t = cub::BlockScan<long long, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  __shared__ int ok_all;
  if (threadIdx.x == 0) {
    ok_all = indptr[0] == 0 && static_cast<std::size_t>(indptr[batch]) == tokens;
  }
  __syncthreads();
  bool ok = true;
  long long carry = 0;
  for (std::size_t base = 0; base < batch; base += Threads) {
    const std::size_t b = base + threadIdx.x;
    long long k = 0;
    if (b < batch) {
      // Monotonicity itself (not the sign of an int32 difference, which wraps) and the length
      // in 64 bits: with indptr[0] == 0 and indptr[batch] == tokens every entry is in range.
      const long long length = static_cast<long long>(indptr[b + 1]) - indptr[b];
      const bool ordered = indptr[b + 1] >= indptr[b] && length <= max_length;
      const index_t n = ordered ? static_cast<index_t>(length) : 0;
      index_t kb = 0;
      const bool fits = dynllava::detail::checked_budget(
          budget.kind, budget.ratio, budget.count,
          budget.kind == budget_kind::per_sequence ? budget.counts[b] : 0, n, kb);
      ok = ok && ordered && fits;
      k = kb;
    }
    long long before = 0;
    long long tile_total = 0;
    scan_t(scan_storage).ExclusiveSum(k, before, tile_total);
    __syncthreads();
    if (b < batch) out_indptr[b] = static_cast<index_t>(carry + before);
    carry += tile_total;
  }
  if (!ok) atomicAnd(&ok_all, 0);
  __syncthreads();
  if (ok_all == 0) {
    for (std::size_t b = threadIdx.x; b <= batch; b += Threads) out_indptr[b] = 0;
  } else if (threadIdx.x == 0) {
    out_indptr[batch] = static_cast<index_t>(carry);
  }
  if (threadIdx.x == 0) {
    *valid = ok_all;
    if (ok_all == 0 && invalid_out != nullptr) *invalid_out = 1;
  }
}

/// @brief Block-wide choice of the bin holding `rank`: thread `t < 256` looks at bin `255 - t`
/// (largest first); the one whose bin holds the rank advances `*state`. Every thread must call.
template <int Threads>
__device__ inline void choose_bin(std::uint32_t count, const radix_select_state& current, int shift,
                                  radix_select_state* state,
                                  typename cub::BlockScan<std::uint32_t, Threads>::TempStorage& s) {
  std::uint32_t above = 0;
  cub::BlockScan<std::uint32_t, Threads>(s).ExclusiveSum(count, above);
  if (threadIdx.x < radix_digit_bins &&
      dynllava::detail::radix_bin_holds_rank(above, count, current.rank)) {
    *state = dynllava::detail::radix_select_advance(
        current, shift, radix_digit_bins - 1u - threadIdx.x, above, count);
  }
}

/// @brief Ordered compaction of the items `[begin, end)` of one row by the final select state,
/// in tiles of `Threads` with running carries: writes kept positions `i` to
/// `out[kept_first + j]` in ascending order. `equal_first` is how many threshold-equal keys come
/// before `begin`. Every thread of the block must call with the same arguments.
template <int Threads, class KeyAt>
__device__ inline void compact_kept(
    KeyAt key_at, index_t begin, index_t end, const radix_select_state& fin, tie_break tie,
    std::uint32_t kept_first, std::uint32_t equal_first, index_t* out,
    typename cub::BlockScan<std::uint32_t, Threads>::TempStorage& s) {
  using scan_t = cub::BlockScan<std::uint32_t, Threads>;
  std::uint32_t kept_carry = kept_first;
  std::uint32_t equal_carry = equal_first;
  for (index_t base = begin; base < end; base += Threads) {
    const index_t i = base + static_cast<index_t>(threadIdx.x);
    const bool inside = i < end;
    const std::uint32_t key = inside ? key_at(i) : 0u;
    std::uint32_t equal_before = 0;
    std::uint32_t equal_tile = 0;
    if (fin.ties > 0u) {  // block-uniform
      scan_t(s).ExclusiveSum(inside && key == fin.threshold ? 1u : 0u, equal_before, equal_tile);
      __syncthreads();
    }
    const bool keep =
        inside && dynllava::detail::radix_keeps(fin, key, equal_carry + equal_before, tie);
    std::uint32_t slot = 0;
    std::uint32_t kept_tile = 0;
    scan_t(s).ExclusiveSum(keep ? 1u : 0u, slot, kept_tile);
    __syncthreads();
    if (keep) out[kept_carry + slot] = i;
    kept_carry += kept_tile;
    equal_carry += equal_tile;
  }
}

/// Shared memory of the one-block select, besides the row's keys (dynamic shared memory).
template <int Threads>
struct block_select_storage {
  typename cub::BlockScan<std::uint32_t, Threads>::TempStorage scan;
  std::uint32_t hist[radix_digit_bins];
  radix_select_state state;
};

/// @brief The whole block selects sequence `begin .. begin + n` (`n <= capacity` keys in shared
/// `keys`): a radix select of the threshold, then the ordered compaction into `out` [k].
/// Every thread of the block must call it with the same arguments. `0 <= k <= n`.
template <class T, int Threads>
__device__ inline void select_sequence(const T* scores, index_t begin, index_t n, index_t k,
                                       index_t* out, tie_break tie, std::uint32_t* keys,
                                       block_select_storage<Threads>& sm) {
  if (k == 0) return;
  if (k == n) {
    for (index_t i = threadIdx.x; i < n; i += Threads) out[i] = i;
    return;
  }
  for (index_t i = threadIdx.x; i < n; i += Threads) {
    keys[i] = key_of(scores, static_cast<std::size_t>(begin) + i);
  }
  if (threadIdx.x == 0) sm.state = dynllava::detail::radix_select_start(k);
  for (int shift = dynllava::detail::radix_first_shift; shift >= 0;
       shift -= dynllava::detail::radix_digit_bits) {
    if (threadIdx.x < radix_digit_bins) sm.hist[threadIdx.x] = 0u;
    __syncthreads();  // keys, state and the cleared histogram are visible
    const radix_select_state current = sm.state;
    for (index_t i = threadIdx.x; i < n; i += Threads) {
      const std::uint32_t key = keys[i];
      if (dynllava::detail::radix_prefix_matches(key, current.prefix, shift)) {
        atomicAdd(&sm.hist[dynllava::detail::radix_digit(key, shift)], 1u);
      }
    }
    __syncthreads();
    const std::uint32_t count =
        threadIdx.x < radix_digit_bins ? sm.hist[radix_digit_bins - 1u - threadIdx.x] : 0u;
    choose_bin<Threads>(count, current, shift, &sm.state, sm.scan);
    __syncthreads();
    if (sm.state.done != 0u) break;
  }
  const radix_select_state fin = sm.state;
  compact_kept<Threads>([&](index_t i) { return keys[i]; }, 0, n, fin, tie, 0u, 0u, out, sm.scan);
  __syncthreads();  // keys and state are reused by the next sequence
}

/// @brief One block per sequence (grid-stride over the batch) after the plan kernel: the row's
/// keys go to shared memory (`capacity` keys of dynamic shared memory) and `select_sequence`
/// runs. Returns at once when `*valid == 0`.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    topk_block_kernel(const T* scores, const index_t* indptr, std::size_t batch,
                      const index_t* out_indptr, index_t* positions, tie_break tie,
                      index_t capacity, const int* valid) {
  extern __shared__ std::uint32_t keys[];  // [capacity]
  __shared__ block_select_storage<Threads> sm;
  if (*valid == 0) return;
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t begin = indptr[b];
    const index_t n = indptr[b + 1] - begin;
    if (n > capacity) continue;  // (n <= capacity was checked by the plan)
    select_sequence<T, Threads>(scores, begin, n, out_indptr[b + 1] - out_indptr[b],
                                positions + out_indptr[b], tie, keys, sm);
  }
}

/// @brief The one-launch top-k of a batch of at most `topk_fused_batch_max` short rows: block `b`
/// validates the whole batch itself (as the plan kernel does), sums the budgets of the sequences
/// before it for its offset, writes `out_indptr[b]` (the last block also `out_indptr[batch]`)
/// and selects its sequence. On an invalid batch every block writes zeros and block 0 raises
/// `*invalid_out`; no position is written.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    topk_fused_kernel(const T* scores, const index_t* indptr, std::size_t batch, std::size_t tokens,
                      index_t max_length, topk_budget_args budget, index_t* out_indptr,
                      index_t* positions, tie_break tie, index_t capacity, int* invalid_out) {
  using reduce_t = cub::BlockReduce<long long, Threads>;
  extern __shared__ std::uint32_t keys[];  // [capacity]
  __shared__ block_select_storage<Threads> sm;
  __shared__ typename reduce_t::TempStorage reduce_storage;
  __shared__ long long offsets[2];  // before this sequence, total
  const std::size_t b = blockIdx.x;
  bool ok = true;
  if (threadIdx.x == 0) {
    ok = indptr[0] == 0 && static_cast<std::size_t>(indptr[batch]) == tokens;
  }
  long long before = 0;
  long long total = 0;
  index_t own_k = 0;
  for (std::size_t s = threadIdx.x; s < batch; s += Threads) {
    const long long length = static_cast<long long>(indptr[s + 1]) - indptr[s];
    const bool ordered = indptr[s + 1] >= indptr[s] && length <= max_length;
    index_t ks = 0;
    const bool fits = dynllava::detail::checked_budget(
        budget.kind, budget.ratio, budget.count,
        budget.kind == budget_kind::per_sequence ? budget.counts[s] : 0,
        ordered ? static_cast<index_t>(length) : 0, ks);
    ok = ok && ordered && fits;
    total += ks;
    if (s < b) before += ks;
  }
  const bool all_ok = __syncthreads_and(ok ? 1 : 0) != 0;
  before = reduce_t(reduce_storage).Sum(before);
  __syncthreads();
  total = reduce_t(reduce_storage).Sum(total);
  if (threadIdx.x == 0) {
    offsets[0] = before;
    offsets[1] = total;
  }
  __syncthreads();
  if (!all_ok) {
    if (threadIdx.x == 0) {
      out_indptr[b] = 0;
      if (b == 0) {
        out_indptr[batch] = 0;
        if (invalid_out != nullptr) *invalid_out = 1;
      }
    }
    return;
  }
  if (threadIdx.x == 0) {
    out_indptr[b] = static_cast<index_t>(offsets[0]);
    if (b + 1 == batch) out_indptr[batch] = static_cast<index_t>(offsets[1]);
  }
  const index_t begin = indptr[b];
  const index_t n = indptr[b + 1] - begin;
  (void)dynllava::detail::checked_budget(
      budget.kind, budget.ratio, budget.count,
      budget.kind == budget_kind::per_sequence ? budget.counts[b] : 0, n, own_k);
  select_sequence<T, Threads>(scores, begin, n, own_k,
                              positions + static_cast<std::size_t>(offsets[0]), tie, keys, sm);
}

// ---- multi-block regime ------------------------------------------------------------------------

/// Per-sequence bookkeeping of the multi-block regime, in the workspace.
struct topk_tile_counts {
  std::uint32_t above;  ///< keys above the threshold in the tile
  std::uint32_t equal;  ///< keys equal to the threshold in the tile
};

/// Grid-stride over the batch: starts every sequence's select and clears its histogram.
/// (A template, as every kernel in a header: a plain `__global__` would be defined in each TU.)
template <int = 0>
__global__ void topk_start_kernel(const index_t* indptr, std::size_t batch,
                                  const index_t* out_indptr, radix_select_state* states,
                                  std::uint32_t* hist, const int* valid) {
  if (*valid == 0) return;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t b = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; b < batch;
       b += stride) {
    const index_t n = indptr[b + 1] - indptr[b];
    const index_t k = out_indptr[b + 1] - out_indptr[b];
    radix_select_state s = dynllava::detail::radix_select_start(k);
    s.done = k == 0 || k == n ? 1u : 0u;  // nothing to select
    states[b] = s;
  }
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
       i < batch * radix_digit_bins; i += stride) {
    hist[i] = 0u;
  }
}

/// Grid (batch, tiles): each block adds its tile's histogram of the digit at `shift` (among the
/// keys sharing the prefix) to the sequence's histogram.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    topk_tile_histogram_kernel(const T* scores, const index_t* indptr,
                               const radix_select_state* states, std::uint32_t* hist, int shift,
                               const int* valid) {
  __shared__ std::uint32_t local[radix_digit_bins];
  const std::size_t b = blockIdx.x;
  if (*valid == 0 || states[b].done != 0u) return;
  const index_t begin = indptr[b];
  const index_t n = indptr[b + 1] - begin;
  const index_t tile_begin = static_cast<index_t>(blockIdx.y) * dynllava::detail::topk_tile_items;
  if (tile_begin >= n) return;
  const index_t tile_end = min(n, tile_begin + dynllava::detail::topk_tile_items);
  const std::uint32_t prefix = states[b].prefix;
  if (threadIdx.x < radix_digit_bins) local[threadIdx.x] = 0u;
  __syncthreads();
  for (index_t i = tile_begin + threadIdx.x; i < tile_end; i += Threads) {
    const std::uint32_t key = key_of(scores, static_cast<std::size_t>(begin) + i);
    if (dynllava::detail::radix_prefix_matches(key, prefix, shift)) {
      atomicAdd(&local[dynllava::detail::radix_digit(key, shift)], 1u);
    }
  }
  __syncthreads();
  if (threadIdx.x < radix_digit_bins && local[threadIdx.x] != 0u) {
    atomicAdd(&hist[b * radix_digit_bins + threadIdx.x], local[threadIdx.x]);
  }
}

/// Grid batch: chooses each sequence's bin from its histogram, advances its state and clears the
/// histogram for the next pass.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    topk_choose_kernel(radix_select_state* states, std::uint32_t* hist, int shift,
                       const int* valid) {
  using scan_t = cub::BlockScan<std::uint32_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  const std::size_t b = blockIdx.x;
  if (*valid == 0 || states[b].done != 0u) return;
  const radix_select_state current = states[b];
  std::uint32_t count = 0u;
  if (threadIdx.x < radix_digit_bins) {
    std::uint32_t& bin = hist[b * radix_digit_bins + radix_digit_bins - 1u - threadIdx.x];
    count = bin;
    bin = 0u;  // each thread clears the bin it read
  }
  __syncthreads();  // every thread has read `states[b]` before the winner writes it
  choose_bin<Threads>(count, current, shift, &states[b], scan_storage);
}

/// Grid (batch, tiles): counts each tile's keys above and equal to the threshold.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    topk_tile_count_kernel(const T* scores, const index_t* indptr, const index_t* out_indptr,
                           const radix_select_state* states, index_t tiles,
                           topk_tile_counts* counts, const int* valid) {
  using reduce_t = cub::BlockReduce<std::uint32_t, Threads>;
  __shared__ typename reduce_t::TempStorage reduce_storage;
  const std::size_t b = blockIdx.x;
  if (*valid == 0) return;
  const index_t begin = indptr[b];
  const index_t n = indptr[b + 1] - begin;
  const index_t k = out_indptr[b + 1] - out_indptr[b];
  const index_t tile_begin = static_cast<index_t>(blockIdx.y) * dynllava::detail::topk_tile_items;
  if (tile_begin >= n || k == 0 || k == n) return;
  const index_t tile_end = min(n, tile_begin + dynllava::detail::topk_tile_items);
  const radix_select_state fin = states[b];
  std::uint32_t above = 0u;
  std::uint32_t equal = 0u;
  for (index_t i = tile_begin + threadIdx.x; i < tile_end; i += Threads) {
    const std::uint32_t key = key_of(scores, static_cast<std::size_t>(begin) + i);
    above += key > fin.threshold ? 1u : 0u;
    equal += key == fin.threshold ? 1u : 0u;
  }
  above = reduce_t(reduce_storage).Sum(above);
  __syncthreads();
  equal = reduce_t(reduce_storage).Sum(equal);
  if (threadIdx.x == 0) counts[b * tiles + blockIdx.y] = {above, equal};
}

/// Grid batch: turns the tile counts of each sequence into exclusive prefixes in place: `above`
/// becomes the kept positions before the tile, `equal` the threshold-equal keys before it.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    topk_tile_scan_kernel(const index_t* indptr, const index_t* out_indptr,
                          const radix_select_state* states, index_t tiles, tie_break tie,
                          topk_tile_counts* counts, const int* valid) {
  using scan_t = cub::BlockScan<std::uint32_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  const std::size_t b = blockIdx.x;
  if (*valid == 0) return;
  const index_t n = indptr[b + 1] - indptr[b];
  const index_t k = out_indptr[b + 1] - out_indptr[b];
  if (k == 0 || k == n) return;
  const index_t used = dynllava::detail::tiles_for(n, dynllava::detail::topk_tile_items);
  const radix_select_state fin = states[b];
  topk_tile_counts* const row = counts + b * tiles;
  std::uint32_t kept_carry = 0u;
  std::uint32_t equal_carry = 0u;
  for (index_t base = 0; base < used; base += Threads) {
    const index_t t = base + static_cast<index_t>(threadIdx.x);
    const topk_tile_counts c = t < used ? row[t] : topk_tile_counts{0u, 0u};
    std::uint32_t equal_before = 0u;
    std::uint32_t equal_total = 0u;
    scan_t(scan_storage).ExclusiveSum(c.equal, equal_before, equal_total);
    __syncthreads();
    const std::uint32_t kept =
        c.above + dynllava::detail::radix_kept_ties(fin, equal_carry + equal_before, c.equal, tie);
    std::uint32_t kept_before = 0u;
    std::uint32_t kept_total = 0u;
    scan_t(scan_storage).ExclusiveSum(kept, kept_before, kept_total);
    __syncthreads();
    if (t < used) row[t] = {kept_carry + kept_before, equal_carry + equal_before};
    kept_carry += kept_total;
    equal_carry += equal_total;
  }
}

/// Grid (batch, tiles): writes each tile's kept positions (or, when `k == n`, every position).
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    topk_tile_write_kernel(const T* scores, const index_t* indptr, const index_t* out_indptr,
                           const radix_select_state* states, index_t tiles, tie_break tie,
                           const topk_tile_counts* prefixes, index_t* positions, const int* valid) {
  using scan_t = cub::BlockScan<std::uint32_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  const std::size_t b = blockIdx.x;
  if (*valid == 0) return;
  const index_t begin = indptr[b];
  const index_t n = indptr[b + 1] - begin;
  const index_t k = out_indptr[b + 1] - out_indptr[b];
  const index_t tile_begin = static_cast<index_t>(blockIdx.y) * dynllava::detail::topk_tile_items;
  if (tile_begin >= n || k == 0) return;
  const index_t tile_end = min(n, tile_begin + dynllava::detail::topk_tile_items);
  index_t* const out = positions + out_indptr[b];
  if (k == n) {
    for (index_t i = tile_begin + threadIdx.x; i < tile_end; i += Threads) out[i] = i;
    return;
  }
  const topk_tile_counts first = prefixes[b * tiles + blockIdx.y];
  const T* const row = scores + begin;
  compact_kept<Threads>([row](index_t i) { return key_of(row, static_cast<std::size_t>(i)); },
                        tile_begin, tile_end, states[b], tie, first.above, first.equal, out,
                        scan_storage);
}

}  // namespace dynllava::cuda::detail
