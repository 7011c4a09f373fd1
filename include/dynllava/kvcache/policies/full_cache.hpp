// SPDX-License-Identifier: Apache-2.0
/// @file full_cache.hpp
/// @brief Dense baseline: every token enters every layer's cache and stays.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/kv_policy.hpp>

namespace dynllava {

struct full_cache_policy {
  bool admits(index_t, bool) const noexcept { return true; }
  /// Never evicts.
  bool evicts(index_t) const noexcept { return false; }
  /// `kv_policy` requirement 3 on the host, sequence by sequence (`kv_policy.hpp`).
  void kept(host_t, index_t l, host_span<const index_t> held, host_span<const index_t> appended,
            host_ragged<const float> scores, host_span<index_t> out_indptr,
            host_span<index_t> out) const {
    detail::kept_by_sequence("full_cache_policy::kept", *this, l, held, appended, scores,
                             out_indptr, out);
  }
  index_t retain(index_t, kv_sequence_state s, host_span<const float>,
                 host_span<index_t> out) const {
    detail::check_retain_out("full_cache_policy", s, out);
    return detail::keep_all(s.held, out);
  }
};
static_assert(host_kv_policy<full_cache_policy>);

}  // namespace dynllava
