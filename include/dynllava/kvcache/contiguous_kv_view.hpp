// SPDX-License-Identifier: Apache-2.0
/// @file contiguous_kv_view.hpp
/// @brief A non-owning view of one layer of a contiguous ragged KV cache, for kernels and
/// engines.
///
/// Sequence `b` owns rows `[b * capacity, b * capacity + lengths[b])` of the layer's storage:
/// its keys at `k_data + (b * capacity + i) * width` (values likewise) and their logical
/// (original) positions at `positions + b * capacity + i`. Rows past `lengths[b]` are unused.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>
#include <type_traits>

namespace dynllava {

template <class T, memory_space Space>
struct contiguous_kv_view {
  span<T, Space> k_data;               ///< [batch, capacity, width]
  span<T, Space> v_data;               ///< [batch, capacity, width]
  span<index_t, Space> positions;      ///< [batch, capacity] logical positions
  span<const index_t, Space> lengths;  ///< [batch] tokens held per sequence
  index_t capacity = 0;                ///< rows per sequence
  index_t width = 0;                   ///< heads * head_dim

  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept { return lengths.size(); }
  /// Tokens held for sequence `b`.
  DYNLLAVA_HOST_DEVICE constexpr index_t length(std::size_t b) const noexcept { return lengths[b]; }
  /// Row of token `i` of sequence `b` in the layer's storage.
  DYNLLAVA_HOST_DEVICE constexpr std::size_t slot(std::size_t b, index_t i) const noexcept {
    return b * static_cast<std::size_t>(capacity) + static_cast<std::size_t>(i);
  }
  DYNLLAVA_HOST_DEVICE constexpr T* key(std::size_t b, index_t i) const noexcept {
    return k_data.data() + slot(b, i) * static_cast<std::size_t>(width);
  }
  DYNLLAVA_HOST_DEVICE constexpr T* value(std::size_t b, index_t i) const noexcept {
    return v_data.data() + slot(b, i) * static_cast<std::size_t>(width);
  }
  DYNLLAVA_HOST_DEVICE constexpr index_t position(std::size_t b, index_t i) const noexcept {
    return positions[slot(b, i)];
  }
};

static_assert(std::is_trivially_copyable_v<contiguous_kv_view<float, device_space>>);

}  // namespace dynllava
