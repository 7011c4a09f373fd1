// SPDX-License-Identifier: Apache-2.0
/// @file h2o.hpp
/// @brief H2O baseline: keep a budget of `min(held, max(recent, floor(ratio * appended)))`
/// tokens per (layer, sequence): the `recent` newest tokens plus the heaviest hitters by
/// accumulated attention
/// (see score/h2o_scorer.hpp), ties to the earlier token; layers below `uncompressed_layers`
/// keep everything (the paper's setting: the first 10 layers).
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ranking_key.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_steps.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace dynllava {

struct h2o_policy {
  double ratio = 0.5;               ///< budget >= floor(ratio * tokens ever appended), in [0, 1]
  index_t recent = 32;              ///< newest tokens always kept (within the budget)
  index_t uncompressed_layers = 0;  ///< layers below this keep everything (paper: 10 of 32/40)

  /// @throws dynllava::error on a ratio outside [0, 1] or a negative window or layer count.
  void validate() const {
    DYNLLAVA_EXPECTS(ratio >= 0.0 && ratio <= 1.0, "h2o_policy: ratio must be in [0, 1], got {}",
                     ratio);
    DYNLLAVA_EXPECTS(recent >= 0, "h2o_policy: recent must be >= 0, got {}", recent);
    DYNLLAVA_EXPECTS(uncompressed_layers >= 0,
                     "h2o_policy: uncompressed_layers must be >= 0, got {}", uncompressed_layers);
  }

  bool admits(index_t, bool) const noexcept { return true; }
  /// Layers below `uncompressed_layers` keep everything.
  bool evicts(index_t layer) const noexcept { return layer >= uncompressed_layers; }
  /// `kv_policy` requirement 3 on the host, sequence by sequence (`kv_policy.hpp`).
  void kept(host_t, index_t l, host_span<const index_t> held, host_span<const index_t> appended,
            host_ragged<const float> scores, host_span<index_t> out_indptr,
            host_span<index_t> out) const {
    detail::kept_by_sequence("h2o_policy::kept", *this, l, held, appended, scores, out_indptr, out);
  }

  /// Budget of a (layer, sequence): how many of its held tokens survive.
  index_t budget(index_t layer, kv_sequence_state s) const noexcept {
    return detail::h2o_budget(layer, s.held, s.appended, ratio, recent, uncompressed_layers);
  }

  /// @param scores [s.held] accumulated attention of each held token (needed when evicting)
  /// @throws dynllava::error on a bad ratio or recent window, or missing scores.
  index_t retain(index_t layer, kv_sequence_state s, host_span<const float> scores,
                 host_span<index_t> out) const {
    validate();
    detail::check_retain_out("h2o_policy", s, out);
    const index_t keep = budget(layer, s);
    if (keep == s.held) return detail::keep_all(s.held, out);
    DYNLLAVA_EXPECTS(scores.size() == static_cast<std::size_t>(s.held),
                     "h2o_policy::retain: scores must have one entry per held token ({}), got {}",
                     s.held, scores.size());
    const detail::h2o_split split = detail::split_h2o_budget(s.held, keep, recent);
    const index_t heavy = split.heavy;
    const index_t older = split.older;  // candidates for heavy hitters: [0, older)
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(older));
    for (index_t i = 0; i < older; ++i) {
      keys[static_cast<std::size_t>(i)] =
          topk_sort_key(scores[static_cast<std::size_t>(i)], i, tie_break::smaller_position);
    }
    std::sort(keys.begin(), keys.end(), std::greater<>{});
    index_t n = 0;
    for (index_t j = 0; j < heavy; ++j) {
      out[static_cast<std::size_t>(n++)] =
          static_cast<index_t>(~static_cast<std::uint32_t>(keys[static_cast<std::size_t>(j)]));
    }
    std::sort(out.data(), out.data() + n);
    for (index_t j = heavy; j < keep; ++j) {
      out[static_cast<std::size_t>(n++)] = detail::h2o_recent_position(s.held, keep, heavy, j);
    }
    return n;
  }
};
static_assert(host_kv_policy<h2o_policy>);
template <>
inline constexpr bool kv_policy_needs_scores<h2o_policy> = true;

}  // namespace dynllava
