// SPDX-License-Identifier: Apache-2.0
/// @file kv_layout_checks.hpp
/// @brief Argument checks and row moves shared by the host KV caches.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <cstddef>

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

}  // namespace dynllava::detail
