// SPDX-License-Identifier: Apache-2.0
/// @file budget.hpp
/// @brief Budget rules of a selection: how many tokens each sequence keeps (`topk_budget`,
/// `keep_ratio`, `keep_count`, `ratio_budget`). Shared by select/, kvcache/ and cost/.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <string_view>

namespace dynllava {

/// How the per-sequence budget `k_b` is given.
enum class budget_kind : std::uint8_t {
  ratio,         ///< `k_b = floor(n_b * ratio)`, computed in double (576 * 0.2 -> 115)
  count,         ///< the same explicit `k` for every sequence; `k <= n_b` is required
  per_sequence,  ///< an explicit `k_b` per sequence; `k_b <= n_b` is required
};

constexpr std::string_view to_string(budget_kind k) noexcept {
  switch (k) {
    case budget_kind::ratio:
      return "ratio";
    case budget_kind::count:
      return "count";
    case budget_kind::per_sequence:
      return "per_sequence";
  }
  return "?";
}
inline std::ostream& operator<<(std::ostream& os, budget_kind k) { return os << to_string(k); }

/// @brief Budget of a top-k selection over a ragged batch. Trivially copyable.
/// @tparam Space memory space of `counts` (the per-sequence budgets), matching the scores'.
/// Build it with `keep_ratio`, `keep_count` or `keep_per_sequence`.
template <memory_space Space>
struct topk_budget {
  budget_kind kind = budget_kind::ratio;
  double ratio = 1.0;                 ///< kind == ratio; in [0, 1]
  index_t count = 0;                  ///< kind == count; in [0, n_b] for every b
  span<const index_t, Space> counts;  ///< kind == per_sequence: [batch], counts[b] in [0, n_b]

  static constexpr topk_budget keep_ratio(double r) noexcept {
    return {budget_kind::ratio, r, 0, {}};
  }
  static constexpr topk_budget keep_count(index_t k) noexcept {
    return {budget_kind::count, 0.0, k, {}};
  }
  static constexpr topk_budget keep_per_sequence(span<const index_t, Space> ks) noexcept {
    return {budget_kind::per_sequence, 0.0, 0, ks};
  }
};

/// Host budget `k_b = floor(n_b * r)`: shorthand for `topk_budget<host_space>::keep_ratio(r)`.
constexpr topk_budget<host_space> keep_ratio(double r) noexcept {
  return topk_budget<host_space>::keep_ratio(r);
}
/// Host budget `k_b = k` for every sequence: shorthand for
/// `topk_budget<host_space>::keep_count(k)`.
constexpr topk_budget<host_space> keep_count(index_t k) noexcept {
  return topk_budget<host_space>::keep_count(k);
}

/// `floor(n * ratio)` in double precision, as the reference computes `int(576 * 0.2)`.
/// @pre `0 <= ratio <= 1`, `n >= 0`.
DYNLLAVA_HOST_DEVICE index_t ratio_budget(index_t n, double ratio) noexcept {
  return static_cast<index_t>(std::floor(static_cast<double>(n) * ratio));
}

}  // namespace dynllava
