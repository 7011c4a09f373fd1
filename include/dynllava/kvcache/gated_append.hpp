// SPDX-License-Identifier: Apache-2.0
/// @file gated_append.hpp
/// @brief Appending a call's K/V to one layer under a policy, and enforcing a policy's retention:
/// once for any execution tag through the layer-level calls of `kv_storage` and `kv_policy`
/// (`dynllava::gated_append`, `dynllava::enforce_retention`: what the drivers call), and token by
/// token / sequence by sequence on the host (`cpu::`, for engines that hold host caches).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <cstdint>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief Appends a call's K/V to layer `layer` of `cache` under `policy`, as one layer-level
/// append (`kv_storage` requirement 4) in the tag's memory: every token where the policy also
/// admits gated-out tokens, the gate's `keep` mask where it admits only kept ones, nothing where
/// it admits none (the policy's `admits` is answered on the host).
/// @param[in] indptr [batch + 1]: new tokens per sequence (CSR)
/// @param[in] k, v [tokens, width]: this layer's keys and values of the new tokens
/// @param[in] keep [tokens]: the output gate's decisions (1 = keep), or empty: every token counts
///            as kept (a prompt; a step where no gate runs)
/// @param[in] positions [tokens]: original positions, stored with the K/V
/// @throws dynllava::error on a policy that admits gated-out tokens but not kept ones, and what
///         the cache's append throws (nothing appended then).
template <class Tag, class C, class P>
requires kv_storage<C, Tag> && kv_policy<P, Tag>
void gated_append(Tag tag, C& cache, const P& policy, index_t layer,
                  span_for<Tag, const index_t> indptr,
                  span_for<Tag, const typename C::value_type> k,
                  span_for<Tag, const typename C::value_type> v,
                  span_for<Tag, const std::uint8_t> keep, span_for<Tag, const index_t> positions) {
  const bool gated_out = policy.admits(layer, false);
  const bool kept = policy.admits(layer, true);
  DYNLLAVA_EXPECTS(kept || !gated_out,
                   "gated_append: the policy admits gated-out tokens but not kept ones at layer {}",
                   layer);
  if (!kept) return;
  cache.append(tag, layer, indptr, k, v,
               gated_out || keep.empty() ? span_for<Tag, const std::uint8_t>{} : keep, positions);
}

/// @brief Enforces `policy` on layer `layer` of `cache`: the policy's kept lists (`kv_policy`
/// requirement 3) into `kept_indptr` / `kept`, then the layer compacted to them (`kv_storage`
/// requirement 5). Nothing happens where `policy.evicts(layer)` is false.
/// @param[in] scores per held token, a row per sequence (score-ranking policies), or empty
/// @param[out] kept_indptr [batch + 1]; @param[out] kept [>= tokens held by the layer]
/// @return whether the layer was compacted (`policy.evicts(layer)`)
template <class Tag, class C, class P>
requires kv_storage<C, Tag> && kv_policy<P, Tag>
bool enforce_retention(Tag tag, C& cache, const P& policy, index_t layer,
                       ragged_for<Tag, const float> scores, span_for<Tag, index_t> kept_indptr,
                       span_for<Tag, index_t> kept) {
  if (!policy.evicts(layer)) return false;
  policy.kept(tag, layer, cache.lengths(layer), cache.appended_counts(layer), scores, kept_indptr,
              kept);
  cache.retain(tag, layer,
               ragged_for<Tag, const index_t>{span_for<Tag, const index_t>(kept_indptr),
                                              span_for<Tag, const index_t>(kept)});
  return true;
}

}  // namespace dynllava

namespace dynllava::cpu {

/// @brief Appends the new tokens of every sequence to layer `layer`, each only if
/// `policy.admits(layer, keep[t])`. A multi-token append (a new user turn) passes keep = 1.
/// @param[in] indptr [batch + 1] host: new tokens per sequence (CSR)
/// @param[in] k, v [tokens, width] host: this layer's keys and values of the new tokens
/// @param[in] keep [tokens] host: the output gate's decisions (1 = keep)
/// @param[in] positions [tokens] host: original positions, stored with the K/V
/// @return tokens appended
/// @throws dynllava::error on shape mismatches, or when the cache is full (nothing is
///         overwritten; tokens appended before the failure stay).
template <host_kv_storage C, kv_policy<host_t> P>
index_t gated_append(C& cache, const P& policy, index_t layer, host_span<const index_t> indptr,
                     host_span<const float> k, host_span<const float> v,
                     host_span<const std::uint8_t> keep, host_span<const index_t> positions) {
  validate_indptr(indptr, keep.size(), "gated_append: indptr");
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  DYNLLAVA_EXPECTS(batch == cache.batch(), "gated_append: indptr covers {} sequences, the cache {}",
                   batch, cache.batch());
  const auto w = static_cast<std::size_t>(cache.width());
  DYNLLAVA_EXPECTS(k.size() == keep.size() * w && v.size() == k.size(),
                   "gated_append: k and v must be [tokens = {}, width = {}], got {} and {} values",
                   keep.size(), w, k.size(), v.size());
  DYNLLAVA_EXPECTS(positions.size() == keep.size(),
                   "gated_append: positions must have one entry per token ({}), got {}",
                   keep.size(), positions.size());
  index_t appended = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    for (index_t t = indptr[b]; t < indptr[b + 1]; ++t) {
      const auto i = static_cast<std::size_t>(t);
      if (!policy.admits(layer, keep[i] != 0)) continue;
      cache.append(layer, b, k.data() + i * w, v.data() + i * w, positions[i]);
      ++appended;
    }
  }
  return appended;
}

/// @brief Applies `policy.retain` to (layer, sequence) and compacts the cache.
/// @param[in] scores [held] per-token scores for score-based policies (H2O), else empty
/// @param[out] kept_out optional: receives the kept local positions (to keep a scorer in step)
/// @return tokens evicted
template <host_kv_storage C, host_kv_policy P>
index_t enforce_retention(C& cache, const P& policy, index_t layer, std::size_t b,
                          host_span<const float> scores = {},
                          std::vector<index_t>* kept_out = nullptr) {
  const kv_sequence_state s{cache.length(layer, b), cache.appended(layer, b)};
  std::vector<index_t> kept(static_cast<std::size_t>(s.held));
  const index_t n = policy.retain(layer, s, scores, make_host_span(kept));
  kept.resize(static_cast<std::size_t>(n));
  if (n < s.held) cache.retain(layer, b, make_host_span(std::as_const(kept)));
  if (kept_out != nullptr) *kept_out = std::move(kept);
  return s.held - n;
}

}  // namespace dynllava::cpu
