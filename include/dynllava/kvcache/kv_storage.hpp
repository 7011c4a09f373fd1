// SPDX-License-Identifier: Apache-2.0
/// @file kv_storage.hpp
/// @brief The `kv_storage` concept: a per-layer, per-sequence KV cache on the host whose layers
/// may hold different numbers of tokens (layers below the sparse layer hold every token, layers
/// at or above it only the kept ones), with each token's logical position stored alongside.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>
#include <cstddef>

namespace dynllava {

/// @brief Requirements, for `C& c` and `const C& cc`, layer `l`, sequence `b`, token `i`:
///   1. `cc.layers()`, `cc.batch()`, `cc.width()` (`heads * head_dim`) describe the shape;
///   2. `cc.length(l, b)` tokens are held; `cc.appended(l, b)` tokens were ever appended;
///   3. `cc.key(l, b, i)`, `cc.value(l, b, i)` point to `width()` floats, `cc.position(l, b, i)`
///      is the token's original position; tokens are in append order;
///   4. `c.append(l, b, k, v, position)` adds one token and throws `dynllava::error` when the
///      storage is full (never overwrites);
///   5. `c.retain(l, b, kept)` keeps only tokens at the ascending local positions `kept`, in
///      place, order preserved, and releases what is no longer needed.
template <class C>
concept kv_storage = requires(C& c, const C& cc, index_t l, std::size_t b, index_t i,
                              const float* row, host_span<const index_t> kept) {
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

}  // namespace dynllava
