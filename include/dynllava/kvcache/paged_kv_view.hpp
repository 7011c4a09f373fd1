// SPDX-License-Identifier: Apache-2.0
/// @file paged_kv_view.hpp
/// @brief A non-owning paged KV view of one layer in FlashInfer's layout, for kernels and engines.
///
/// Sequence `b` owns pages `indices[indptr[b] .. indptr[b + 1])`, all full except the last,
/// which holds `last_page_len[b]` tokens (an empty sequence has no page). Page `p` stores
/// `page_size` rows of `width` keys at `k_data + p * page_size * width` (values likewise) and
/// their logical (original) positions at `positions + p * page_size`.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>

#include <type_traits>

namespace dynllava {

template <class T, memory_space Space>
struct paged_kv_view {
  span<T, Space> k_data;                     ///< [num_pages, page_size, width]
  span<T, Space> v_data;                     ///< [num_pages, page_size, width]
  span<index_t, Space> positions;            ///< [num_pages, page_size] logical positions
  span<const index_t, Space> indptr;         ///< [batch + 1] page offsets
  span<const index_t, Space> indices;        ///< [indptr[batch]] page ids
  span<const index_t, Space> last_page_len;  ///< [batch] tokens in each sequence's last page
  index_t page_size = 1;
  index_t width = 0;  ///< heads * head_dim

  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept {
    return indptr.size() == 0 ? 0 : indptr.size() - 1;
  }
  /// Tokens held for sequence `b`.
  DYNLLAVA_HOST_DEVICE constexpr index_t length(std::size_t b) const noexcept {
    const index_t pages = indptr[b + 1] - indptr[b];
    return pages == 0 ? 0 : (pages - 1) * page_size + last_page_len[b];
  }
  /// Row of token `i` of sequence `b` in the page storage (page * page_size + slot).
  DYNLLAVA_HOST_DEVICE constexpr std::size_t slot(std::size_t b, index_t i) const noexcept {
    const index_t page = indices[static_cast<std::size_t>(indptr[b] + i / page_size)];
    return static_cast<std::size_t>(page) * static_cast<std::size_t>(page_size) +
           static_cast<std::size_t>(i % page_size);
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

static_assert(std::is_trivially_copyable_v<paged_kv_view<float, device_space>>);

}  // namespace dynllava
