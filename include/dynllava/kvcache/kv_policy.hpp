// SPDX-License-Identifier: Apache-2.0
/// @file kv_policy.hpp
/// @brief The `kv_policy` concept: which new tokens enter a layer's KV cache, and which held
/// tokens a layer keeps.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>

namespace dynllava {

/// What a policy knows about one (layer, sequence) cache.
struct kv_sequence_state {
  index_t held = 0;      ///< tokens in the cache now
  index_t appended = 0;  ///< tokens ever appended (held + evicted)
};

/// @brief Requirements, for `const P& p`, an execution tag type `Tag`, layer `l`, a token's keep
/// decision `keep`, a state `s`, per-held-token scores `scores` (`span_for<Tag, const float>`,
/// `[s.held]` or empty) and `out` (`span_for<Tag, index_t>`, `[s.held]`):
///   1. `p.admits(l, keep)` says whether the token's K/V enters layer `l`'s cache (the token
///      attends to itself in its own step either way); it is answered on the host;
///   2. `p.retain(l, s, scores, out)` writes the local positions (ascending) of the held tokens
///      to keep and returns how many; keeping all `s.held` means no eviction;
///   3. both are deterministic functions of their arguments.
template <class P, class Tag>
concept kv_policy = execution_tag<Tag> &&
    requires(const P& p, index_t l, bool keep, kv_sequence_state s,
             span_for<Tag, const float> scores, span_for<Tag, index_t> out) {
  { p.admits(l, keep) } -> std::same_as<bool>;
  { p.retain(l, s, scores, out) } -> std::same_as<index_t>;
};

/// Opt-in: true for policies whose `retain` ranks held tokens by scores that the caller must
/// supply (H2O's accumulated attention). Drivers enforce score-free policies by themselves.
template <class P>
inline constexpr bool kv_policy_needs_scores = false;

namespace detail {
/// @throws dynllava::error naming `who` when `out` cannot hold every held token.
inline void check_retain_out(const char* who, kv_sequence_state s, host_span<index_t> out) {
  DYNLLAVA_EXPECTS(out.size() >= static_cast<std::size_t>(s.held),
                   "{}::retain: out must hold {} entries, got {}", who, s.held, out.size());
}

/// Writes `0 .. n-1` (keep everything) and returns `n`.
inline index_t keep_all(index_t n, host_span<index_t> out) {
  for (index_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i;
  return n;
}
}  // namespace detail

}  // namespace dynllava
