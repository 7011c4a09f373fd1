// SPDX-License-Identifier: Apache-2.0
/// @file decoder.hpp
/// @brief The `decoder` concept: what a model offers so that dynllava's pipeline can drive it;
/// `layer_probes` and `probing_decoder`: what attention-based baselines (FastV, H2O) read.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace dynllava {

/// @brief Optional outputs of one `layer` call, in memory space `Space`, owned by the caller; an
/// empty span is not written.
template <memory_space Space>
struct basic_layer_probes {
  /// `[rows, H]`: the rows' queries after RoPE (FastV reads the last prompt row's).
  span<float, Space> queries;
  /// At least `sum_b (cached(l, b) + rows(b))` entries, whose first ones are written sequence by
  /// sequence: for every key a row of sequence `b` could attend to in this call (the tokens the
  /// cache holds for (l, b), in cache order, then the call's rows of `b`), the attention
  /// probability it received, summed over heads and over the call's rows of `b` (H2O accumulates
  /// it). Overwritten, not accumulated; entries past the sum are left as they were. A host caller
  /// sizes it exactly (`key_attention_size`); a caller that cannot read the cache's lengths
  /// without a synchronisation (device caches) sizes it by a bound, e.g. `batch * capacity +
  /// rows`, and finds each sequence's offset from the lengths where they live.
  span<float, Space> key_attention;
};
/// The host probes.
using layer_probes = basic_layer_probes<host_space>;
/// The probes of execution tag `Tag`.
template <class Tag>
using layer_probes_for = basic_layer_probes<execution_space_t<Tag>>;

/// @brief A model the drivers can run: requirements, for `const M& m`, an execution tag `tag` of
/// type `Tag` (every view below lives in `execution_space_t<Tag>`) and a KV storage type `C`
/// (`kv_storage<C, Tag>`):
///   1. `m.layers()`, `m.hidden()` and `m.vocab()` give the number of decoder layers, the
///      width H and the vocabulary size;
///   2. `m.embed(tag, tokens, out)` writes `[n, H]` input rows for `n` token ids
///      (`span_for<Tag, const std::int32_t>`);
///   3. `m.layer(tag, l, rows, positions, cache, k, v)` runs layer `l` in place on a ragged batch
///      of rows (`ragged_rows_for<Tag, float>`, `[n, H]`) at the given original positions
///      (`span_for<Tag, const index_t>`, `[n]`), each row attending to what `cache` (`const C*`,
///      may be null: nothing cached) holds for its sequence at layer `l` and to the earlier rows of
///      its sequence in this call, and writes the rows' keys and values (`[n, H]` each,
///      `span_for<Tag, typename C::value_type>`: in the element type the cache stores, so a
///      decoder for an fp16 or bf16 cache writes them in that width) for the caller to cache;
///   4. `m.logits(tag, rows, out)` maps `[n, H]` final hidden states to `[n, vocab]` logits.
/// The hidden states entering layer `l` are simply the rows after layers `0 .. l-1`: the
/// pipeline owns them between calls, which is where the predictors read them.
template <class M, class Tag, class C>
concept decoder = kv_storage<C, Tag> &&
    requires(const M& m, Tag tag, index_t l, span_for<Tag, const std::int32_t> tokens,
             span_for<Tag, float> out, ragged_rows_for<Tag, float> rows,
             span_for<Tag, const index_t> positions, const C* cache,
             span_for<Tag, typename C::value_type> kv, span_for<Tag, const float> final_rows) {
  { m.layers() } -> std::convertible_to<index_t>;
  { m.hidden() } -> std::convertible_to<index_t>;
  { m.vocab() } -> std::convertible_to<index_t>;
  m.embed(tag, tokens, out);
  m.layer(tag, l, rows, positions, cache, kv, kv);
  m.logits(tag, final_rows, out);
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

/// @brief A `decoder` that also hands out what attention-based baselines read (FastV, H2O).
/// Requirements, in addition to `decoder<M, Tag, C>`:
///   1. `m.heads()` is the number of attention heads (H is a multiple of it; queries and keys
///      are `[heads, H / heads]` per row);
///   2. `m.layer(tag, l, rows, positions, cache, k, v, probes)` (`layer_probes_for<Tag>`) runs
///      the layer as the six-argument form does and fills the probes' non-empty spans.
template <class M, class Tag, class C>
concept probing_decoder = decoder<M, Tag, C> &&
    requires(const M& m, Tag tag, index_t l, ragged_rows_for<Tag, float> rows,
             span_for<Tag, const index_t> positions, const C* cache,
             span_for<Tag, typename C::value_type> kv, layer_probes_for<Tag> probes) {
  { m.heads() } -> std::convertible_to<index_t>;
  m.layer(tag, l, rows, positions, cache, kv, kv, probes);
};

}  // namespace dynllava
