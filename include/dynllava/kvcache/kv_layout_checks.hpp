// SPDX-License-Identifier: Apache-2.0
/// @file kv_layout_checks.hpp
/// @brief Argument checks and row moves shared by the host KV caches.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace dynllava::detail {

inline void check_layer_sequence(const char* fn, index_t layer, index_t layers, std::size_t b,
                                 std::size_t batch) {
  DYNLLAVA_EXPECTS(layer >= 0 && layer < layers, "{}: layer {} is not in [0, {})", fn, layer,
                   layers);
  DYNLLAVA_EXPECTS(b < batch, "{}: sequence {} is not in [0, {})", fn, b, batch);
}

/// Copies token row `from` to row `to` (K and V of `width` floats, and the position) inside one
/// host KV storage. Shared by the caches' append and compaction.
inline void copy_token(float* k, float* v, index_t* pos, std::size_t width, std::size_t from,
                       std::size_t to) {
  std::copy(k + from * width, k + (from + 1) * width, k + to * width);
  std::copy(v + from * width, v + (from + 1) * width, v + to * width);
  pos[to] = pos[from];
}

/// Kept positions must be strictly ascending and below `held`.
inline void check_kept(const char* fn, host_span<const index_t> kept, index_t held) {
  index_t prev = -1;
  for (std::size_t j = 0; j < kept.size(); ++j) {
    DYNLLAVA_EXPECTS(kept[j] > prev && kept[j] < held,
                     "{}: kept[{}] = {} must be ascending and below the {} held tokens", fn, j,
                     kept[j], held);
    prev = kept[j];
  }
}

/// @brief Checks the shapes of a layer-level append (`kv_storage` requirement 4) in any memory
/// space (nothing is read through the spans), against a cache of `layers` layers, `batch`
/// sequences and `width` columns: the layer, `indptr` (`[batch + 1]`), `k` and `v`
/// (`[tokens, width]`, `tokens` = the positions' count), `keep` (empty or `[tokens]`), and no
/// tokens for an empty batch. @throws dynllava::error naming `fn` and the argument.
template <class T, class Space>
void check_layer_append_shapes(const char* fn, index_t layer, index_t layers, std::size_t batch,
                               index_t width, span<const index_t, Space> indptr,
                               span<const T, Space> k, span<const T, Space> v,
                               span<const std::uint8_t, Space> keep,
                               span<const index_t, Space> positions) {
  DYNLLAVA_EXPECTS(layer >= 0 && layer < layers, "{}: layer {} is not in [0, {})", fn, layer,
                   layers);
  DYNLLAVA_EXPECTS(indptr.size() == batch + 1,
                   "{}: indptr must have batch + 1 = {} entries, got {}", fn, batch + 1,
                   indptr.size());
  const std::size_t tokens = positions.size();
  const auto w = static_cast<std::size_t>(width);
  DYNLLAVA_EXPECTS(k.size() == tokens * w && v.size() == k.size(),
                   "{}: k and v must be [tokens = {}, width = {}], got {} and {} values", fn,
                   tokens, w, k.size(), v.size());
  DYNLLAVA_EXPECTS(keep.empty() || keep.size() == tokens,
                   "{}: keep must be empty (every token) or have one entry per token ({}), got {}",
                   fn, tokens, keep.size());
  DYNLLAVA_EXPECTS(batch > 0 || tokens == 0, "{}: an empty batch cannot take {} tokens", fn,
                   tokens);
}

/// @brief `check_layer_append_shapes` on the host, plus the offsets themselves (first 0,
/// non-decreasing, last = tokens).
inline void check_layer_append(const char* fn, index_t layer, index_t layers, std::size_t batch,
                               index_t width, host_span<const index_t> indptr,
                               host_span<const float> k, host_span<const float> v,
                               host_span<const std::uint8_t> keep,
                               host_span<const index_t> positions) {
  check_layer_append_shapes(fn, layer, layers, batch, width, indptr, k, v, keep, positions);
  validate_indptr(indptr, positions.size(), fn);
}

/// New tokens of sequence `b` that a layer-level append admits (`keep` empty: all).
inline index_t admitted_tokens(host_span<const index_t> indptr, host_span<const std::uint8_t> keep,
                               std::size_t b) noexcept {
  if (keep.empty()) return indptr[b + 1] - indptr[b];
  index_t n = 0;
  for (index_t t = indptr[b]; t < indptr[b + 1]; ++t) n += keep[static_cast<std::size_t>(t)] != 0;
  return n;
}

/// @brief The per-token appends of a checked layer-level append, sequence by sequence.
template <class Cache>
void append_admitted(Cache& cache, index_t layer, host_span<const index_t> indptr,
                     host_span<const float> k, host_span<const float> v,
                     host_span<const std::uint8_t> keep, host_span<const index_t> positions) {
  const auto w = static_cast<std::size_t>(cache.width());
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    for (index_t t = indptr[b]; t < indptr[b + 1]; ++t) {
      const auto i = static_cast<std::size_t>(t);
      if (!keep.empty() && keep[i] == 0) continue;
      cache.append(layer, b, k.data() + i * w, v.data() + i * w, positions[i]);
    }
  }
}

/// @brief Checks every kept list of a layer-level retain (`kv_storage` requirement 5): one row
/// per sequence of `held` (`[batch]` tokens held), each strictly ascending and below its count;
/// `kept.values` may be longer than `kept.indptr[batch]`.
inline void check_layer_kept(const char* fn, index_t layer, index_t layers,
                             host_ragged<const index_t> kept, host_span<const index_t> held) {
  DYNLLAVA_EXPECTS(layer >= 0 && layer < layers, "{}: layer {} is not in [0, {})", fn, layer,
                   layers);
  DYNLLAVA_EXPECTS(kept.indptr.size() == held.size() + 1,
                   "{}: kept must have one row per sequence ({}), got indptr of {} entries", fn,
                   held.size(), kept.indptr.size());
  DYNLLAVA_EXPECTS(kept.indptr[0] == 0, "{}: kept.indptr[0] must be 0, got {}", fn, kept.indptr[0]);
  for (std::size_t b = 0; b < held.size(); ++b) {
    DYNLLAVA_EXPECTS(kept.indptr[b + 1] >= kept.indptr[b],
                     "{}: kept.indptr must be non-decreasing, got indptr[{}] = {} > indptr[{}] "
                     "= {}",
                     fn, b, kept.indptr[b], b + 1, kept.indptr[b + 1]);
  }
  DYNLLAVA_EXPECTS(static_cast<std::size_t>(kept.indptr[held.size()]) <= kept.values.size(),
                   "{}: kept.indptr[batch] = {} exceeds the {} kept values", fn,
                   kept.indptr[held.size()], kept.values.size());
  for (std::size_t b = 0; b < held.size(); ++b) check_kept(fn, kept.row(b), held[b]);
}

}  // namespace dynllava::detail
