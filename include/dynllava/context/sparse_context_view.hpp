// SPDX-License-Identifier: Apache-2.0
/// @file sparse_context_view.hpp
/// @brief `sparse_context_view`: which rows of a ragged batch stay in the context, and the
/// original position id of each.
///
/// Layers at and after the sparse layer run on the kept rows only, gathered in this order, with
/// RoPE applied at `positions` (original positions are never renumbered).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <type_traits>
#include <vector>

namespace dynllava {

/// @brief Kept rows of a ragged batch, CSR by sequence. Non-owning, trivially copyable.
/// Within a sequence, rows (and therefore positions) are strictly ascending.
template <memory_space Space>
struct sparse_context_view {
  span<const index_t, Space> indptr;     ///< [batch + 1] offsets into rows/positions
  span<const index_t, Space> rows;       ///< [kept] row in the packed source batch (global)
  span<const index_t, Space> positions;  ///< [kept] original position id of that row

  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept {
    return indptr.size() == 0 ? 0 : indptr.size() - 1;
  }
  /// Total kept rows.
  DYNLLAVA_HOST_DEVICE constexpr std::size_t size() const noexcept { return rows.size(); }
  /// Kept rows of sequence `b`. @pre `b < batch()`.
  DYNLLAVA_HOST_DEVICE constexpr index_t length(std::size_t b) const noexcept {
    return indptr[b + 1] - indptr[b];
  }
};

static_assert(std::is_trivially_copyable_v<sparse_context_view<host_space>>);
static_assert(std::is_trivially_copyable_v<sparse_context_view<device_space>>);

/// @brief An owning sparse context on the host, as built by `cpu::build_sparse_context`.
struct host_sparse_context {
  std::vector<index_t> indptr;     ///< [batch + 1]
  std::vector<index_t> rows;       ///< [kept]
  std::vector<index_t> positions;  ///< [kept]

  sparse_context_view<host_space> view() const noexcept {
    return {make_host_span(indptr), make_host_span(rows), make_host_span(positions)};
  }
};

}  // namespace dynllava
