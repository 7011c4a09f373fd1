// SPDX-License-Identifier: Apache-2.0
/// @file radix_select.hpp
/// @brief One sequence's top-k on the CPU: an MSD byte-radix select of the k-th ranking key,
/// then one scan that writes the kept positions in ascending order.
///
/// The ranking key of a candidate is `topk_sort_key(score, position, tie)` (core/ranking_key.hpp):
/// `score_key(score)` in the high word, the position (tie order) in the low word. The select
/// resolves the high word by histogram passes over one byte at a time (each pass only over the
/// candidates that still share the prefix), and the low word by position order in the final scan:
/// among keys equal in the high word, the tie rule takes the first (smaller_position) or last
/// (larger_position) positions, which is exactly what the low word encodes. The kept set is
/// therefore the set of the `k` largest 64-bit keys, and since the scan goes by position the
/// output needs no sort.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/select/radix_steps.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace dynllava {
namespace cpu {

/// Reusable scratch of `select_top_positions`: grows to the longest sequence seen, then stays.
struct radix_select_scratch {
  std::vector<std::uint32_t> keys;        ///< [n] score keys of the sequence
  std::vector<std::uint32_t> candidates;  ///< [n] keys that share the prefix selected so far
};

}  // namespace cpu

namespace detail {

/// Digit width of the radix select: one byte, 256 bins, 4 passes at most over 32-bit keys.
inline constexpr int radix_bits = radix_digit_bits;  // shared with the CUDA twin
inline constexpr std::size_t radix_bins = std::size_t{1} << radix_bits;

/// @brief Finds the bin holding the `rank`-th largest key (1-based) of a histogram.
/// @param[in,out] rank on return, the rank within that bin
/// @return the bin
inline std::uint32_t radix_bin_of_rank(const std::array<std::uint32_t, radix_bins>& hist,
                                       std::uint32_t& rank) noexcept {
  auto bin = static_cast<std::uint32_t>(radix_bins - 1);
  while (hist[bin] < rank) {  // rank >= 1 and the bins hold at least rank keys: stops at >= 0
    rank -= hist[bin];
    --bin;
  }
  return bin;
}

/// Below this many candidates the select finishes with `std::nth_element` on them: cheaper than
/// another 256-bin histogram pass.
inline constexpr std::size_t radix_small_candidates = 64;

/// Histogram of the digit at `shift` of `keys[0 .. m)`, in two interleaved halves so that runs
/// of one digit (frequent: most scores share their leading bits) do not serialize increments;
/// in one when `m` is too small to repay clearing and adding the second.
inline void radix_histogram(const std::uint32_t* keys, std::size_t m, int shift,
                            std::array<std::uint32_t, radix_bins>& hist) noexcept {
  hist.fill(0);
  if (m < 2 * radix_bins) {
    for (std::size_t i = 0; i < m; ++i) ++hist[(keys[i] >> shift) & (radix_bins - 1)];
    return;
  }
  std::array<std::uint32_t, radix_bins> other{};
  std::size_t i = 0;
  for (; i + 1 < m; i += 2) {
    ++hist[(keys[i] >> shift) & (radix_bins - 1)];
    ++other[(keys[i + 1] >> shift) & (radix_bins - 1)];
  }
  if (i < m) ++hist[(keys[i] >> shift) & (radix_bins - 1)];
  for (std::size_t b = 0; b < radix_bins; ++b) hist[b] += other[b];
}

/// `keys[i] = score_key(row[i])` for `i < n`, in blocks of constant length so that `-O2`
/// (GCC's very-cheap vectorizer, which refuses loops needing an epilogue) vectorizes it.
inline void radix_keys(const float* row, std::size_t n, std::uint32_t* keys) noexcept {
  constexpr std::size_t block = 16;
  std::size_t i = 0;
  for (; i + block <= n; i += block) {
    for (std::size_t j = 0; j < block; ++j) keys[i + j] = score_key(row[i + j]);
  }
  for (; i < n; ++i) keys[i] = score_key(row[i]);
}

}  // namespace detail

namespace cpu {

/// @brief The `k` best candidates of one sequence by ranking key, as ascending positions.
/// @param[in] row [n] host scores of the sequence's candidates, read-only
/// @param[in] k how many to keep; `0 < k < n` (callers handle `k == 0` and `k == n`)
/// @param[in] tie order among equal scores
/// @param[out] out [k] host; the kept positions, ascending
/// @param[in,out] scratch reusable scratch (grown to `n` when shorter)
/// @pre `0 < k < n`, `n < 2^31`.
inline void select_top_positions(host_span<const float> row, index_t k, tie_break tie,
                                 host_span<index_t> out, radix_select_scratch& scratch) {
  using detail::radix_bins;
  const std::size_t n = row.size();
  if (scratch.keys.size() < n) scratch.keys.resize(n);
  if (scratch.candidates.size() < n) scratch.candidates.resize(n);
  std::uint32_t* const keys = scratch.keys.data();
  std::uint32_t* const cand = scratch.candidates.data();
  detail::radix_keys(row.data(), n, keys);

  // MSD passes: `prefix` holds the high bits fixed so far, `rank` the rank of the k-th largest
  // key among the candidates sharing it (1-based). Each pass narrows both by one byte.
  std::array<std::uint32_t, radix_bins> hist;
  auto rank = static_cast<std::uint32_t>(k);
  std::uint32_t prefix = 0;
  std::uint32_t threshold = 0;  // keys > threshold are kept
  std::uint32_t ties = 0;       // ... and `ties` of the keys == threshold, by tie order
  const std::uint32_t* level = keys;
  std::size_t m = n;
  for (int shift = 32 - detail::radix_bits; shift >= 0; shift -= detail::radix_bits) {
    detail::radix_histogram(level, m, shift, hist);
    const std::uint32_t bin = detail::radix_bin_of_rank(hist, rank);
    prefix |= bin << shift;
    if (rank == hist[bin]) {
      // The whole bin is kept: keep every key >= prefix. prefix > 0, since keeping every
      // key >= 0 would mean k == n.
      threshold = prefix - 1;
      ties = 0;
      break;
    }
    if (shift == 0) {  // the bin is one key value: keep `rank` of its `hist[bin]` ties
      threshold = prefix;
      ties = rank;
      break;
    }
    // Keep the candidates whose digit is `bin` (all share the higher bits already).
    std::size_t kept = 0;
    for (std::size_t i = 0; i < m; ++i) {
      const std::uint32_t key = level[i];
      cand[kept] = key;
      kept += ((key >> shift) & (radix_bins - 1)) == bin;
    }
    level = cand;
    m = kept;
    if (m <= detail::radix_small_candidates) {
      // Few candidates left, all sharing `prefix`: the k-th largest key is their `rank`-th.
      std::nth_element(cand, cand + (rank - 1), cand + m, std::greater<>{});
      threshold = cand[rank - 1];
      std::uint32_t above = 0;
      for (std::size_t i = 0; i < m; ++i) above += cand[i] > threshold;
      ties = rank - above;
      break;
    }
  }

  // The kept ties are the first `ties` keys equal to `threshold` (smaller_position) or the
  // last `ties` (larger_position): find where they start or end, then keep by position in one
  // forward scan, `key >= threshold` inside the tie range and `key > threshold` outside it.
  std::size_t tie_begin = 0;  // keys == threshold count as kept in [tie_begin, tie_end)
  std::size_t tie_end = 0;
  if (ties > 0) {
    std::uint32_t seen = 0;
    if (tie == tie_break::smaller_position) {
      while (seen < ties) seen += keys[tie_end++] == threshold;
    } else {
      tie_begin = tie_end = n;
      while (seen < ties) seen += keys[--tie_begin] == threshold;
    }
  }
  const auto kk = static_cast<std::size_t>(k);
  std::size_t c = 0;
  const auto keep = [&](std::size_t begin, std::size_t end, auto kept) {
    for (std::size_t i = begin; i < end && c < kk; ++i) {
      out[c] = static_cast<index_t>(i);
      c += kept(keys[i]);
    }
  };
  const auto above = [threshold](std::uint32_t key) { return key > threshold; };
  keep(0, tie_begin, above);
  keep(tie_begin, tie_end, [threshold](std::uint32_t key) { return key >= threshold; });
  keep(tie_end, n, above);
}

}  // namespace cpu
}  // namespace dynllava
