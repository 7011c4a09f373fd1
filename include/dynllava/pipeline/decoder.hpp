// SPDX-License-Identifier: Apache-2.0
/// @file decoder.hpp
/// @brief The `decoder` concept: what a model offers so that dynllava's pipeline can drive it.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <concepts>
#include <cstdint>

namespace dynllava {

/// @brief Requirements, for `const M& m` and a KV storage type `C`:
///   1. `m.layers()` and `m.hidden()` give the number of decoder layers and the width H;
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
      m.embed(tokens, out);
      m.layer(l, rows, positions, cache, out, out);
      m.logits(final_rows, out);
    };

}  // namespace dynllava
