// SPDX-License-Identifier: Apache-2.0
/// @file streaming.hpp
/// @brief StreamingLLM baseline: keep the first `sinks` tokens (attention sinks) and the last
/// `window` tokens; evict the middle.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/kv_policy.hpp>

#include <algorithm>

namespace dynllava {

struct streaming_policy {
  index_t sinks = 4;
  index_t window = 1020;

  /// @throws dynllava::error on a negative sink count or window.
  void validate() const {
    DYNLLAVA_EXPECTS(sinks >= 0 && window >= 0,
                     "streaming_policy: sinks ({}) and window ({}) "
                     "must be >= 0",
                     sinks, window);
  }

  bool admits(index_t, bool) const noexcept { return true; }
  /// Evicts the middle of every layer.
  bool evicts(index_t) const noexcept { return true; }
  /// `kv_policy` requirement 3 on the host, sequence by sequence (`kv_policy.hpp`).
  void kept(host_t, index_t l, host_span<const index_t> held, host_span<const index_t> appended,
            host_ragged<const float> scores, host_span<index_t> out_indptr,
            host_span<index_t> out) const {
    detail::kept_by_sequence("streaming_policy::kept", *this, l, held, appended, scores, out_indptr,
                             out);
  }
  /// Keeps `min(held, sinks + window)` tokens: positions `[0, sinks)` and the last `window`.
  index_t retain(index_t, kv_sequence_state s, host_span<const float>,
                 host_span<index_t> out) const {
    validate();
    detail::check_retain_out("streaming_policy", s, out);
    if (s.held <= sinks + window) return detail::keep_all(s.held, out);
    index_t n = 0;
    for (index_t i = 0; i < sinks; ++i) out[static_cast<std::size_t>(n++)] = i;
    for (index_t i = s.held - window; i < s.held; ++i) out[static_cast<std::size_t>(n++)] = i;
    return n;
  }
};
static_assert(host_kv_policy<streaming_policy>);

}  // namespace dynllava
