// SPDX-License-Identifier: Apache-2.0
/// @file kv_policy.hpp
/// @brief The KV-policy concepts: `kv_policy<P, Tag>`, which new tokens enter a layer's KV cache
/// and which held tokens a layer keeps, decided a whole layer at a time in the tag's memory (the
/// host policies and their CUDA twins model it); and its host refinement `host_kv_policy<P>`,
/// which also decides one (layer, sequence) at a time (what the host drivers call).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>
#include <cstddef>

namespace dynllava {

/// What a policy knows about one (layer, sequence) cache.
struct kv_sequence_state {
  index_t held = 0;      ///< tokens in the cache now
  index_t appended = 0;  ///< tokens ever appended (held + evicted)
};

/// @brief Requirements, for `const P& p`, an execution tag `tag` of type `Tag`, layer `l` and a
/// token's keep decision `keep` (every view below lives in `execution_space_t<Tag>`):
///   1. `p.admits(l, keep)` says whether a token whose output-gate decision is `keep` enters
///      layer `l`'s cache (the token attends to itself in its own step either way); it is
///      answered on the host from the layer and the decision alone, so a driver turns it into
///      "every token", "the gate's mask" or "none" before a layer-level gated append;
///   2. `p.evicts(l)` says, on the host, whether requirement 3 can drop a token at layer `l`
///      (drivers skip the compaction where it cannot);
///   3. `p.kept(tag, l, held, appended, scores, out_indptr, out)` writes, for every sequence, the
///      ascending local positions of the held tokens that stay: `held` and `appended`
///      (`span_for<Tag, const index_t>`, `[batch]`: tokens held now / ever appended), `scores`
///      (`ragged_for<Tag, const float>`: one score per held token, a row per sequence; empty
///      for policies that do not rank), `out_indptr` (`span_for<Tag, index_t>`, `[batch + 1]`)
///      and `out` (`span_for<Tag, index_t>`, at least the held tokens); invalid input is an error
///      (the host throws; a device model raises a device flag it documents);
///   4. all are deterministic functions of their arguments.
template <class P, class Tag>
concept kv_policy = execution_tag<Tag> &&
    requires(const P& p, Tag tag, index_t l, bool keep, span_for<Tag, const index_t> counts,
             ragged_for<Tag, const float> scores, span_for<Tag, index_t> out) {
  { p.admits(l, keep) } -> std::same_as<bool>;
  { p.evicts(l) } -> std::same_as<bool>;
  p.kept(tag, l, counts, counts, scores, out, out);
};

/// @brief `kv_policy<P, host_t>` that also decides one (layer, sequence) at a time, for
/// `const P& p`, layer `l`, a state `s`, per-held-token scores `scores`
/// (`host_span<const float>`, `[s.held]` or empty) and `out` (`host_span<index_t>`, `[s.held]`):
///   1. `kv_policy<P, host_t>`;
///   2. `p.retain(l, s, scores, out)` writes the local positions (ascending) of the held tokens
///      to keep and returns how many (requirement 3 of `kv_policy` for one sequence); keeping all
///      `s.held` means no eviction.
template <class P>
concept host_kv_policy = kv_policy<P, host_t> &&
    requires(const P& p, index_t l, kv_sequence_state s, host_span<const float> scores,
             host_span<index_t> out) {
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

/// @brief `kv_policy` requirement 3 on the host, one sequence at a time through
/// `policy.retain(l, s, scores, out)`: the host policies' `kept`.
/// @throws dynllava::error naming `who` and the argument on mismatched sizes.
template <class P>
void kept_by_sequence(const char* who, const P& policy, index_t l, host_span<const index_t> held,
                      host_span<const index_t> appended, host_ragged<const float> scores,
                      host_span<index_t> out_indptr, host_span<index_t> out) {
  const std::size_t batch = held.size();
  DYNLLAVA_EXPECTS(appended.size() == batch && out_indptr.size() == batch + 1,
                   "{}: appended and out_indptr must have batch = {} and batch + 1 entries, got "
                   "{} and {}",
                   who, batch, appended.size(), out_indptr.size());
  const bool ranked = !scores.values.empty();
  if (ranked) {
    DYNLLAVA_EXPECTS(scores.indptr.size() == batch + 1,
                     "{}: scores must have one row per sequence ({}), got indptr of {} entries",
                     who, batch, scores.indptr.size());
    validate_indptr(scores.indptr, scores.values.size(), who);
  }
  std::size_t total = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    DYNLLAVA_EXPECTS(held[b] >= 0 && appended[b] >= held[b],
                     "{}: sequence {} holds {} of {} appended tokens", who, b, held[b],
                     appended[b]);
    DYNLLAVA_EXPECTS(!ranked || scores.length(b) == held[b],
                     "{}: scores of sequence {} must have one entry per held token ({}), got {}",
                     who, b, held[b], scores.length(b));
    total += static_cast<std::size_t>(held[b]);
  }
  DYNLLAVA_EXPECTS(out.size() >= total, "{}: out must hold the {} held tokens, got {}", who, total,
                   out.size());
  out_indptr[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const auto first = static_cast<std::size_t>(out_indptr[b]);
    const index_t n = policy.retain(l, kv_sequence_state{held[b], appended[b]},
                                    ranked ? scores.row(b) : host_span<const float>{},
                                    out.subspan(first, static_cast<std::size_t>(held[b])));
    out_indptr[b + 1] = out_indptr[b] + n;
  }
}
}  // namespace detail

}  // namespace dynllava
