// SPDX-License-Identifier: Apache-2.0
/// @file reference_topk.hpp
/// @brief Top-k references for tests: an independent full sort with a comparator written from
/// the ranking rule's text (float comparisons, no shared key packing with the library), and the
/// library's previous CPU algorithm (`std::nth_element` + sort on the 64-bit ranking keys), kept
/// to check that the radix select returns bit-identical results.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/ranking_key.hpp>
#include <dynllava/core/tie_break.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

namespace dynllava::test {

/// True when score `a` at `pa` ranks before `b` at `pb`: larger first, NaN last, ties (including
/// +0/-0 and NaN/NaN) by smaller position unless `larger_first`.
inline bool reference_before(float a, index_t pa, float b, index_t pb, bool larger_first = false) {
  const bool na = std::isnan(a);
  const bool nb = std::isnan(b);
  if (na != nb) return nb;  // the non-NaN one ranks first
  if (!na && a != b) return a > b;
  return larger_first ? pa > pb : pa < pb;
}

/// Kept positions (ascending) of the `k` best of `scores`.
inline std::vector<index_t> reference_topk(const std::vector<float>& scores, index_t k,
                                           bool larger_first = false) {
  std::vector<index_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](index_t x, index_t y) {
    return reference_before(scores[static_cast<std::size_t>(x)], x,
                            scores[static_cast<std::size_t>(y)], y, larger_first);
  });
  order.resize(static_cast<std::size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

/// Kept positions (ascending) of the `k` best of `row[0 .. n)`, computed as `cpu::topk` did
/// before the radix select: `std::nth_element` on the 64-bit ranking keys, then a sort of the
/// `k` positions. `keys` is scratch.
inline void nth_element_topk(const float* row, index_t n, index_t k, tie_break tie, index_t* out,
                             std::vector<std::uint64_t>& keys) {
  if (k == 0) return;
  if (k == n) {
    for (index_t i = 0; i < n; ++i) out[i] = i;
    return;
  }
  keys.resize(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    keys[static_cast<std::size_t>(i)] = topk_sort_key(row[i], i, tie);
  }
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<>{});
  for (index_t j = 0; j < k; ++j)
    out[j] = topk_key_position(keys[static_cast<std::size_t>(j)], tie);
  std::sort(out, out + k);
}

/// `nth_element_topk` of a whole row, returning the kept positions.
inline std::vector<index_t> nth_element_topk(const std::vector<float>& row, index_t k,
                                             tie_break tie) {
  std::vector<index_t> out(static_cast<std::size_t>(k));
  std::vector<std::uint64_t> keys;
  nth_element_topk(row.data(), static_cast<index_t>(row.size()), k, tie, out.data(), keys);
  return out;
}

}  // namespace dynllava::test
