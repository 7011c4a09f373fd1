// SPDX-License-Identifier: Apache-2.0
/// @file radix_steps.hpp
/// @brief The arithmetic of the CUDA top-k as host/device functions: digit extraction, bin
/// choice, the select state machine, the keep rule of the ordered compaction, tile offsets and
/// the regime rule. The kernels (select/cuda/) are thin loops around these; the CPU tests run the
/// same steps in a block emulation and compare with `cpu::topk`.
///
/// The select works on the 32-bit score keys (`score_key`, core/tie_break.hpp), most significant
/// byte first. A pass at digit `shift` counts, among the keys that share the digits fixed so far
/// (`prefix`), how many fall in each of the 256 bins; the bin holding the `rank`-th largest key
/// (1-based) becomes part of the prefix. The select ends when that bin is kept whole (every key
/// `>= prefix` is kept, no tie to resolve) or at the last digit (the bin is one key value, the
/// threshold, of which the first or last `ties` by position are kept). The kept set is then the
/// `k` largest 64-bit ranking keys, exactly as the CPU twin (select/radix_select.hpp) selects.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/tie_break.hpp>

#include <cstddef>
#include <cstdint>

namespace dynllava::detail {

/// Digit width of the select: one byte, 256 bins, at most 4 passes over 32-bit keys.
inline constexpr int radix_digit_bits = 8;
inline constexpr std::uint32_t radix_digit_bins = 1u << radix_digit_bits;
/// Shift of the most significant digit.
inline constexpr int radix_first_shift = 32 - radix_digit_bits;

/// The digit of `key` at bit `shift`.
DYNLLAVA_HOST_DEVICE constexpr std::uint32_t radix_digit(std::uint32_t key, int shift) noexcept {
  return (key >> shift) & (radix_digit_bins - 1);
}

/// True when `key` shares with `prefix` every digit above the one at `shift` (the candidates of
/// that pass).
DYNLLAVA_HOST_DEVICE constexpr bool radix_prefix_matches(std::uint32_t key, std::uint32_t prefix,
                                                         int shift) noexcept {
  const int high = shift + radix_digit_bits;
  return high >= 32 || ((key ^ prefix) >> high) == 0u;
}

/// True when the bin with `count` keys, and `above` keys in larger bins, holds the `rank`-th
/// largest key (1-based). Exactly one bin of a histogram holding at least `rank` keys does.
DYNLLAVA_HOST_DEVICE constexpr bool radix_bin_holds_rank(std::uint32_t above, std::uint32_t count,
                                                         std::uint32_t rank) noexcept {
  return above < rank && rank - above <= count;
}

/// @brief State of one sequence's select. An aggregate without initialisers, so that it can live
/// in `__shared__` memory; start it with `radix_select_start`.
struct radix_select_state {
  std::uint32_t prefix;     ///< digits fixed so far (lower digits zero)
  std::uint32_t rank;       ///< rank (1-based) of the k-th largest key among the candidates
  std::uint32_t threshold;  ///< once done: keys above it are kept
  std::uint32_t ties;       ///< once done: how many keys equal to `threshold` are kept
  std::uint32_t equal;      ///< once done with ties: how many keys equal `threshold`
  std::uint32_t done;       ///< 1 once threshold and ties are final
};

/// The state before the first pass of a select of `k` keys. @pre `0 < k < n`.
DYNLLAVA_HOST_DEVICE constexpr radix_select_state radix_select_start(index_t k) noexcept {
  return {0u, static_cast<std::uint32_t>(k), 0u, 0u, 0u, 0u};
}

/// @brief Advances the state after the pass at `shift` found the `rank`-th key in `bin`, which
/// holds `count` candidates, with `above` candidates in larger bins.
/// @pre `radix_bin_holds_rank(above, count, s.rank)` and `!s.done`.
DYNLLAVA_HOST_DEVICE constexpr radix_select_state radix_select_advance(
    radix_select_state s, int shift, std::uint32_t bin, std::uint32_t above,
    std::uint32_t count) noexcept {
  s.prefix |= bin << shift;
  s.rank -= above;
  if (s.rank == count) {  // the whole bin is kept: every key >= prefix (prefix > 0 as k < n)
    s.threshold = s.prefix - 1u;
    s.ties = 0u;
    s.equal = 0u;
    s.done = 1u;
  } else if (shift == 0) {  // the bin is one key value: keep `rank` of its `count` equal keys
    s.threshold = s.prefix;
    s.ties = s.rank;
    s.equal = count;
    s.done = 1u;
  }
  return s;
}

/// @brief The keep rule of the ordered compaction, once the select is done.
/// @param key the candidate's score key
/// @param equal_before how many keys equal to the threshold come before it by position
DYNLLAVA_HOST_DEVICE constexpr bool radix_keeps(const radix_select_state& s, std::uint32_t key,
                                                std::uint32_t equal_before,
                                                tie_break tie) noexcept {
  if (key != s.threshold) return key > s.threshold;
  if (s.ties == 0u) return false;
  return tie == tie_break::smaller_position ? equal_before < s.ties
                                            : equal_before >= s.equal - s.ties;
}

/// @brief How many of the threshold-equal keys with ordinals `[first, first + count)` are kept
/// (a tile's share of the ties, for the multi-block compaction).
DYNLLAVA_HOST_DEVICE constexpr std::uint32_t radix_kept_ties(const radix_select_state& s,
                                                             std::uint32_t first,
                                                             std::uint32_t count,
                                                             tie_break tie) noexcept {
  const std::uint32_t lo = tie == tie_break::smaller_position ? 0u : s.equal - s.ties;
  const std::uint32_t hi = tie == tie_break::smaller_position ? s.ties : s.equal;
  const std::uint32_t begin = first > lo ? first : lo;
  const std::uint32_t end = first + count < hi ? first + count : hi;
  return end > begin ? end - begin : 0u;
}

/// How the CUDA top-k runs a batch (see `topk_regime_for`).
enum class topk_regime : std::uint8_t {
  block_per_sequence,   ///< one block per sequence, the row's keys held in shared memory
  blocks_per_sequence,  ///< tiles of a row over many blocks, multi-pass radix select
};

/// Longest row that the one-block regime holds on chip (32 KiB of keys).
inline constexpr index_t topk_block_row_max = 8192;
/// Largest batch whose short-row top-k runs in one launch: each block then checks the whole
/// batch and sums the budgets before it itself (work `batch^2` in all), instead of a plan kernel.
inline constexpr std::size_t topk_fused_batch_max = 1024;
/// Candidates per block (tile) in the multi-block regime.
inline constexpr index_t topk_tile_items = 4096;
/// Longest row of the multi-block regime: 65535 tiles (the grid's y limit) of 4096 keys.
inline constexpr long long topk_row_max = 65535LL * topk_tile_items;

/// @brief The regime rule: rows of at most `topk_block_row_max` candidates (every LLaVA image,
/// output histories up to a few thousand tokens) take one block per sequence, held on chip;
/// longer rows are split into tiles of `topk_tile_items` over many blocks.
/// @param max_length an upper bound of every sequence's length, known on the host
DYNLLAVA_HOST_DEVICE constexpr topk_regime topk_regime_for(index_t max_length) noexcept {
  return max_length <= topk_block_row_max ? topk_regime::block_per_sequence
                                          : topk_regime::blocks_per_sequence;
}

/// Number of tiles of `tile` items covering `n` items.
DYNLLAVA_HOST_DEVICE constexpr index_t tiles_for(index_t n, index_t tile) noexcept {
  return n <= 0 ? 0 : (n - 1) / tile + 1;
}

/// @brief Sequence `b`'s budget, checked: false when the budget does not fit `n` (the CPU twin
/// throws there). Device twin of `budget_of` for the ratio, count and per-sequence kinds.
/// @param count_b `counts[b]` for `budget_kind::per_sequence` (ignored otherwise)
DYNLLAVA_HOST_DEVICE bool checked_budget(budget_kind kind, double ratio, index_t count,
                                         index_t count_b, index_t n, index_t& k) noexcept {
  switch (kind) {
    case budget_kind::ratio:
      k = ratio_budget(n, ratio);
      return ratio >= 0.0 && ratio <= 1.0;
    case budget_kind::count:
      k = count;
      return count >= 0 && count <= n;
    case budget_kind::per_sequence:
      k = count_b;
      return count_b >= 0 && count_b <= n;
  }
  k = 0;
  return false;
}

/// @brief The sequence holding token `i` of a CSR batch: the last `b` with `indptr[b] <= i`
/// (empty sequences starting at `i` come before it). Binary search.
/// @pre `indptr` valid, `0 <= i < indptr[batch]`.
DYNLLAVA_HOST_DEVICE constexpr std::size_t sequence_of(const index_t* indptr, std::size_t batch,
                                                       index_t i) noexcept {
  std::size_t lo = 0;      // indptr[lo] <= i
  std::size_t hi = batch;  // indptr[hi] > i
  while (hi - lo > 1) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (indptr[mid] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// @brief The first of the sequences that begin at token `i`, given that sequence `s` does
/// (`indptr[s] == i`): `s` itself, or the first of the empty sequences right before it. A
/// compaction writes the kept offset at `i` to `out_indptr[e]` for every `e` from there to `s`
/// (the CUDA gate kernel; with `s = batch` and `i = indptr[batch]`, the end and the empty
/// sequences at the end). @pre `indptr` valid, `s <= batch`, `indptr[s] == i`.
DYNLLAVA_HOST_DEVICE constexpr std::size_t first_sequence_at(const index_t* indptr, std::size_t s,
                                                             index_t i) noexcept {
  while (s > 0 && indptr[s - 1] == i) --s;
  return s;
}

}  // namespace dynllava::detail
