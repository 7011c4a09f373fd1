// SPDX-License-Identifier: Apache-2.0
/// @file gated_append.hpp
/// @brief Appending a step's K/V to one layer under a policy, and enforcing a policy's
/// retention, on the host.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <cstdint>
#include <utility>
#include <vector>

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
