// SPDX-License-Identifier: Apache-2.0
/// @file decoder.hpp
/// @brief The `decoder` concept: what a model offers so that dynllava's pipeline can drive it;
/// `layer_probes` and `probing_decoder`: what attention-based baselines (FastV, H2O) read.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace dynllava {

/// @brief Requirements, for `const M& m` and a KV storage type `C`:
///   1. `m.layers()`, `m.hidden()` and `m.vocab()` give the number of decoder layers, the
///      width H and the vocabulary size;
///   2. `m.embed(tokens, out)` writes `[n, H]` input rows for `n` token ids;
///   3. `m.layer(l, rows, positions, cache, k, v)` runs layer `l` in place on a ragged batch of
///      rows (`host_ragged_rows<float>`, `[n, H]`) at the given original positions, each row
///      attending to what `cache` (`const C*`, may be null) holds for its sequence at layer `l`
///      and to the earlier rows of its sequence in this call, and writes the rows' keys and
///      values (`[n, H]` each) for the caller to cache;
///   4. `m.logits(rows, out)` maps `[n, H]` final hidden states to `[n, vocab]` logits.
/// The hidden states entering layer `l` are simply the rows after layers `0 .. l-1`: the
/// pipeline owns them between calls, which is where the predictors read them.
template <class M, class C>
concept decoder = kv_storage<C> &&
    requires(const M& m, index_t l, host_span<const std::int32_t> tokens, host_span<float> out,
             host_ragged_rows<float> rows, host_span<const index_t> positions, const C* cache,
             host_span<const float> final_rows) {
      { m.layers() } -> std::convertible_to<index_t>;
      { m.hidden() } -> std::convertible_to<index_t>;
      { m.vocab() } -> std::convertible_to<index_t>;
      m.embed(tokens, out);
      m.layer(l, rows, positions, cache, out, out);
      m.logits(final_rows, out);
    };

/// @brief Optional outputs of one `layer` call, host memory owned by the caller; an empty span
/// is not written.
struct layer_probes {
  /// `[rows, H]`: the rows' queries after RoPE (FastV reads the last prompt row's).
  host_span<float> queries;
  /// `[sum_b (cached(l, b) + rows(b))]`, sequence by sequence: for every key a row of sequence
  /// `b` could attend to in this call (the tokens the cache holds for (l, b), in cache order,
  /// then the call's rows of `b`), the attention probability it received, summed over heads and
  /// over the call's rows of `b` (H2O accumulates it). Overwritten, not accumulated.
  host_span<float> key_attention;
};

/// Entries `layer_probes::key_attention` needs: `sum_b (cached[b] + rows(b))`.
/// @param[in] indptr [batch + 1] host: rows of each sequence in the call (CSR)
/// @param[in] cached [batch] host: tokens the layer's cache holds per sequence
inline std::size_t key_attention_size(host_span<const index_t> indptr,
                                      host_span<const index_t> cached) noexcept {
  std::size_t n = 0;
  for (std::size_t b = 0; b < cached.size(); ++b) {
    n += static_cast<std::size_t>(cached[b]) + static_cast<std::size_t>(indptr[b + 1] - indptr[b]);
  }
  return n;
}

/// @brief A `decoder` whose `layer` also takes `layer_probes` as a seventh argument:
/// `m.layer(l, rows, positions, cache, k, v, probes)`, and whose `m.heads()` gives the number of
/// attention heads (H is a multiple of it; queries and keys are `[heads, H / heads]` per row).
/// FastV and H2O need one.
template <class M, class C>
concept probing_decoder = decoder<M, C> &&
    requires(const M& m, index_t l, host_ragged_rows<float> rows, host_span<const index_t> positions,
             const C* cache, host_span<float> out, layer_probes probes) {
      { m.heads() } -> std::convertible_to<index_t>;
      m.layer(l, rows, positions, cache, out, out, probes);
    };

}  // namespace dynllava
