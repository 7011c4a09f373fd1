// SPDX-License-Identifier: Apache-2.0
/// @file full_cache.hpp
/// @brief Dense baseline: every token enters every layer's cache and stays.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/kv_policy.hpp>

namespace dynllava {

struct full_cache_policy {
  bool admits(index_t, bool) const noexcept { return true; }
  index_t retain(index_t, kv_sequence_state s, host_span<const float>,
                 host_span<index_t> out) const {
    detail::check_retain_out("full_cache_policy", s, out);
    return detail::keep_all(s.held, out);
  }
};
static_assert(kv_policy<full_cache_policy, host_t>);

}  // namespace dynllava
