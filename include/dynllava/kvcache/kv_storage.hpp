// SPDX-License-Identifier: Apache-2.0
/// @file kv_storage.hpp
/// @brief The KV-storage concepts: `kv_storage<C, Tag>`, a per-layer, per-sequence KV cache
/// whose layers may hold different numbers of tokens (layers below the sparse layer hold every
/// token, layers at or above it only the kept ones), with each token's logical position stored
/// alongside, driven a whole layer at a time in the tag's memory space (the host caches and the
/// CUDA caches model it); and its host refinement `host_kv_storage<C>`, which also gives
/// token-by-token access (what the host drivers and the host decoder read).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace dynllava {

/// @brief Requirements, for `C& c` and `const C& cc`, an execution tag `tag` of type `Tag`, layer
/// `l` (every view below lives in `execution_space_t<Tag>`):
///   1. `C::memory_space` is `execution_space_t<Tag>`: keys, values, positions and the per-layer
///      counts live there; `C::value_type` is the stored element of K and V (`float` on the
///      host; `float`, `__half` or `__nv_bfloat16` on CUDA);
///   2. `cc.layers()`, `cc.batch()`, `cc.width()` (`heads * head_dim`) describe the shape and are
///      answered on the host;
///   3. `cc.lengths(l)` and `cc.appended_counts(l)` (`span_for<Tag, const index_t>`, `[batch]`)
///      are the tokens layer `l` holds and has ever been given, per sequence; a device model
///      keeps them in device memory and never reads them back;
///   4. `c.append(tag, l, indptr, k, v, keep, positions)` appends the new tokens of every
///      sequence to layer `l`: sequence `b`'s tokens `indptr[b] .. indptr[b + 1]`
///      (`span_for<Tag, const index_t>`, `[batch + 1]`), in order, each only when `keep`
///      (`span_for<Tag, const std::uint8_t>`, `[tokens]`) is empty or `keep[t] != 0`, with keys
///      and values `k`, `v` (`span_for<Tag, const value_type>`, `[tokens, width]`) and original
///      positions `positions` (`[tokens]`). All or nothing: when a sequence lacks room or an
///      offset is malformed nothing changes (the host throws `dynllava::error`; a device model,
///      which cannot throw on what only the device knows, raises a device flag it documents);
///   5. `c.retain(tag, l, kept)` keeps, for every sequence, only the tokens at the strictly
///      ascending local positions of its row of `kept` (`ragged_for<Tag, const index_t>`; its
///      `values` may be longer than `indptr[batch]`, e.g. a buffer sized for every held token,
///      and the rest is ignored), in place, order preserved, and releases what is no longer
///      needed; invalid lists change nothing (as in 4).
template <class C, class Tag>
concept kv_storage = execution_tag<Tag> &&
    std::same_as<typename C::memory_space, execution_space_t<Tag>> &&
    requires(C& c, const C& cc, Tag tag, index_t l, span_for<Tag, const index_t> indices,
             span_for<Tag, const typename C::value_type> rows,
             span_for<Tag, const std::uint8_t> keep, ragged_for<Tag, const index_t> kept) {
  { cc.layers() } -> std::convertible_to<index_t>;
  { cc.batch() } -> std::convertible_to<std::size_t>;
  { cc.width() } -> std::convertible_to<index_t>;
  { cc.lengths(l) } -> std::same_as<span_for<Tag, const index_t>>;
  { cc.appended_counts(l) } -> std::same_as<span_for<Tag, const index_t>>;
  c.append(tag, l, indices, rows, rows, keep, indices);
  c.retain(tag, l, kept);
};

/// @brief `kv_storage<C, host_t>` with fp32 rows and token-by-token access, for `C& c`,
/// `const C& cc`, layer `l`, sequence `b`, token `i`:
///   1. `kv_storage<C, host_t>` and `C::value_type` is `float`;
///   2. `cc.length(l, b)` tokens are held; `cc.appended(l, b)` tokens were ever appended;
///   3. `cc.key(l, b, i)`, `cc.value(l, b, i)` point to `width()` floats, `cc.position(l, b, i)`
///      is the token's original position; tokens are in append order;
///   4. `c.append(l, b, k, v, position)` adds one token and throws `dynllava::error` when the
///      storage is full (never overwrites);
///   5. `c.retain(l, b, kept)` is requirement 5 of `kv_storage` for one sequence
///      (`host_span<const index_t>`).
template <class C>
concept host_kv_storage = kv_storage<C, host_t> && std::same_as<typename C::value_type, float> &&
    requires(C& c, const C& cc, index_t l, std::size_t b, index_t i, const float* row,
             host_span<const index_t> kept) {
  { cc.length(l, b) } -> std::convertible_to<index_t>;
  { cc.appended(l, b) } -> std::convertible_to<index_t>;
  { cc.key(l, b, i) } -> std::convertible_to<const float*>;
  { cc.value(l, b, i) } -> std::convertible_to<const float*>;
  { cc.position(l, b, i) } -> std::convertible_to<index_t>;
  c.append(l, b, row, row, i);
  c.retain(l, b, kept);
};

/// Tokens held by layer `l` of a host `cache`, summed over the batch.
template <class C>
requires kv_storage<C, host_t> index_t held_tokens(const C& cache, index_t l) {
  index_t n = 0;
  for (const index_t held : cache.lengths(l)) n += held;
  return n;
}

/// Bytes of K and V actually held by every layer of a host `cache` (tokens x 2 x width x the
/// element size).
template <class C>
requires kv_storage<C, host_t> std::size_t bytes_held(const C& cache) {
  std::size_t n = 0;
  for (index_t l = 0; l < cache.layers(); ++l) n += static_cast<std::size_t>(held_tokens(cache, l));
  return n * 2 * static_cast<std::size_t>(cache.width()) * sizeof(typename C::value_type);
}

}  // namespace dynllava
