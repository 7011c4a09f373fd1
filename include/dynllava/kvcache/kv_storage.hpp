// SPDX-License-Identifier: Apache-2.0
/// @file kv_storage.hpp
/// @brief The `kv_storage` concept: a per-layer, per-sequence KV cache on the host whose layers
/// may hold different numbers of tokens (layers below the sparse layer hold every token, layers
/// at or above it only the kept ones), with each token's logical position stored alongside.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>
#include <cstddef>

namespace dynllava {

/// @brief Requirements, for `C& c` and `const C& cc`, an execution tag type `Tag`, layer `l`,
/// sequence `b`, token `i`:
///   1. `C::memory_space` is `execution_space_t<Tag>`: keys, values and the `kept` lists live
///      there (the shape queries below are answered on the host);
///   2. `cc.layers()`, `cc.batch()`, `cc.width()` (`heads * head_dim`) describe the shape;
///   3. `cc.length(l, b)` tokens are held; `cc.appended(l, b)` tokens were ever appended;
///   4. `cc.key(l, b, i)`, `cc.value(l, b, i)` point to `width()` floats, `cc.position(l, b, i)`
///      is the token's original position; tokens are in append order;
///   5. `c.append(l, b, k, v, position)` adds one token and throws `dynllava::error` when the
///      storage is full (never overwrites);
///   6. `c.retain(l, b, kept)` keeps only tokens at the ascending local positions `kept`
///      (`span_for<Tag, const index_t>`), in place, order preserved, and releases what is no
///      longer needed.
template <class C, class Tag>
concept kv_storage = execution_tag<Tag> &&
    std::same_as<typename C::memory_space, execution_space_t<Tag>> &&
    requires(C& c, const C& cc, index_t l, std::size_t b, index_t i, const float* row,
             span_for<Tag, const index_t> kept) {
  { cc.layers() } -> std::convertible_to<index_t>;
  { cc.batch() } -> std::convertible_to<std::size_t>;
  { cc.width() } -> std::convertible_to<index_t>;
  { cc.length(l, b) } -> std::convertible_to<index_t>;
  { cc.appended(l, b) } -> std::convertible_to<index_t>;
  { cc.key(l, b, i) } -> std::convertible_to<const float*>;
  { cc.value(l, b, i) } -> std::convertible_to<const float*>;
  { cc.position(l, b, i) } -> std::convertible_to<index_t>;
  c.append(l, b, row, row, i);
  c.retain(l, b, kept);
};

/// Tokens held by layer `l` of `cache`, summed over the batch.
template <kv_storage<host_t> C>
index_t held_tokens(const C& cache, index_t l) noexcept {
  index_t n = 0;
  for (std::size_t b = 0; b < cache.batch(); ++b) n += cache.length(l, b);
  return n;
}

/// Bytes of K and V actually held by every layer of `cache` (tokens x 2 x width x 4, fp32).
template <kv_storage<host_t> C>
std::size_t bytes_held(const C& cache) noexcept {
  std::size_t n = 0;
  for (index_t l = 0; l < cache.layers(); ++l) n += static_cast<std::size_t>(held_tokens(cache, l));
  return n * 2 * static_cast<std::size_t>(cache.width()) * sizeof(float);
}

}  // namespace dynllava
