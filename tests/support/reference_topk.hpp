// SPDX-License-Identifier: Apache-2.0
/// @file reference_topk.hpp
/// @brief An independent top-k reference for tests: a full sort with a comparator written from
/// the ranking rule's text (float comparisons, no shared key packing with the library).
#pragma once

#include <dynllava/core/config.hpp>

#include <algorithm>
#include <cmath>
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

}  // namespace dynllava::test
