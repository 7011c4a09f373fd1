// SPDX-License-Identifier: Apache-2.0
/// @file gather.hpp
/// @brief Gather and scatter of hidden-state rows through a list of row indices, on the CPU.
///
/// `gather_rows` builds the shorter context (`dst[i] = src[rows[i]]`); `scatter_rows` writes
/// results back to their original rows (`dst[rows[i]] = src[i]`). Rows are `width` contiguous
/// elements (row-major `[num_rows, width]`). The CUDA twins are in
/// `context/cuda/device_gather.cuh`.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

namespace dynllava {

/// @brief Checks the shapes of a row gather/scatter: `packed` holds `rows.size()` rows and
/// `full` a whole number of rows of `width` elements. Shared by the CPU and CUDA entry points.
/// @return number of rows in `full`
/// @throws dynllava::error naming the argument and the expected versus actual size.
inline std::size_t check_row_shapes(const char* fn, std::size_t full_size, std::size_t packed_size,
                                    std::size_t num_indices, index_t width) {
  DYNLLAVA_EXPECTS(width > 0, "{}: width must be > 0, got {}", fn, width);
  const auto w = static_cast<std::size_t>(width);
  DYNLLAVA_EXPECTS(full_size % w == 0,
                   "{}: the full tensor's size ({}) must be a multiple of width ({})", fn,
                   full_size, w);
  DYNLLAVA_EXPECTS(packed_size == num_indices * w,
                   "{}: the packed tensor must hold rows.size() * width = {} elements, got {}", fn,
                   num_indices * w, packed_size);
  return full_size / w;
}

namespace cpu {

/// @brief `dst[i, :] = src[rows[i], :]`.
/// @param[in] src [num_rows, width] host, read-only
/// @param[in] width elements per row, > 0
/// @param[in] rows [m] host row indices into `src`, each in [0, num_rows); repeats allowed
/// @param[out] dst [m, width] host
/// @throws dynllava::error on a shape mismatch or a row index out of range.
template <class T>
requires std::is_trivially_copyable_v<T>
void gather_rows(std::type_identity_t<host_span<const T>> src, index_t width,
                 host_span<const index_t> rows, host_span<T> dst) {
  const std::size_t n = check_row_shapes("gather_rows", src.size(), dst.size(), rows.size(), width);
  const auto w = static_cast<std::size_t>(width);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    DYNLLAVA_EXPECTS(rows[i] >= 0 && static_cast<std::size_t>(rows[i]) < n,
                     "gather_rows: rows[{}] = {} is out of range [0, {})", i, rows[i], n);
    const T* from = src.data() + static_cast<std::size_t>(rows[i]) * w;
    std::copy(from, from + w, dst.data() + i * w);
  }
}

/// @brief `dst[rows[i], :] = src[i, :]`; rows of `dst` not listed are left unchanged.
/// @param[in] src [m, width] host, read-only
/// @param[in] width elements per row, > 0
/// @param[in] rows [m] host row indices into `dst`, each in [0, num_rows) and distinct
/// @param[in,out] dst [num_rows, width] host
/// @throws dynllava::error on a shape mismatch, an index out of range or a repeated index.
template <class T>
requires std::is_trivially_copyable_v<T>
void scatter_rows(std::type_identity_t<host_span<const T>> src, index_t width,
                  host_span<const index_t> rows, host_span<T> dst) {
  const std::size_t n =
      check_row_shapes("scatter_rows", dst.size(), src.size(), rows.size(), width);
  const auto w = static_cast<std::size_t>(width);
  std::vector<bool> seen(n, false);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    DYNLLAVA_EXPECTS(rows[i] >= 0 && static_cast<std::size_t>(rows[i]) < n,
                     "scatter_rows: rows[{}] = {} is out of range [0, {})", i, rows[i], n);
    DYNLLAVA_EXPECTS(!seen[static_cast<std::size_t>(rows[i])],
                     "scatter_rows: row {} is listed twice (rows[{}]); a scatter needs distinct "
                     "rows",
                     rows[i], i);
    seen[static_cast<std::size_t>(rows[i])] = true;
  }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const T* from = src.data() + i * w;
    std::copy(from, from + w, dst.data() + static_cast<std::size_t>(rows[i]) * w);
  }
}

}  // namespace cpu

/// Execution-tag entry point: gather on the host. @see cpu::gather_rows
template <class T>
requires std::is_trivially_copyable_v<T>
void gather_rows(host_t, std::type_identity_t<host_span<const T>> src, index_t width,
                 host_span<const index_t> rows, host_span<T> dst) {
  cpu::gather_rows(src, width, rows, dst);
}

/// Execution-tag entry point: scatter on the host. @see cpu::scatter_rows
template <class T>
requires std::is_trivially_copyable_v<T>
void scatter_rows(host_t, std::type_identity_t<host_span<const T>> src, index_t width,
                  host_span<const index_t> rows, host_span<T> dst) {
  cpu::scatter_rows(src, width, rows, dst);
}

}  // namespace dynllava
