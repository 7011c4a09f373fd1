// SPDX-License-Identifier: Apache-2.0
/// @file ragged.hpp
/// @brief CSR layout for ragged batches: `indptr[batch + 1]` offsets into packed `values`.
///
/// Sequence `b` owns `values[indptr[b] .. indptr[b + 1])`. `indptr[0] == 0`, `indptr` is
/// non-decreasing and `indptr[batch] == values.size()`. An empty batch is `indptr = {0}`; an
/// empty `indptr` span is accepted as an empty batch too. Empty sequences are allowed.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>
#include <limits>
#include <type_traits>

namespace dynllava {

/// @brief A ragged batch in CSR form; non-owning, trivially copyable.
/// @tparam T element type of the packed values (add `const` for read-only)
/// @tparam Space memory space of both `indptr` and `values`
template <class T, memory_space Space>
struct ragged_span {
  span<const index_t, Space> indptr;  ///< [batch + 1] offsets, first 0, last values.size()
  span<T, Space> values;              ///< [indptr[batch]] packed elements

  /// Number of sequences.
  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept {
    return indptr.size() == 0 ? 0 : indptr.size() - 1;
  }
  /// Offset of sequence `b` in `values`. @pre `b <= batch()` and `indptr` non-empty.
  DYNLLAVA_HOST_DEVICE constexpr index_t offset(std::size_t b) const noexcept { return indptr[b]; }
  /// Number of elements of sequence `b`. @pre `b < batch()`.
  DYNLLAVA_HOST_DEVICE constexpr index_t length(std::size_t b) const noexcept {
    return indptr[b + 1] - indptr[b];
  }
  /// Elements of sequence `b`. @pre `b < batch()`.
  DYNLLAVA_HOST_DEVICE constexpr span<T, Space> row(std::size_t b) const noexcept {
    return values.subspan(static_cast<std::size_t>(indptr[b]), static_cast<std::size_t>(length(b)));
  }
  /// Read-only view of the same data.
  DYNLLAVA_HOST_DEVICE constexpr ragged_span<const T, Space> as_const() const noexcept {
    return {indptr, values};
  }
  /// Implicit conversion to the read-only view (as `span<T>` -> `span<const T>`).
  template <class U = T>
  requires(!std::is_const_v<U>) DYNLLAVA_HOST_DEVICE constexpr
  operator ragged_span<const U, Space>() const noexcept {
    return {indptr, values};
  }
};

template <class T>
using host_ragged = ragged_span<T, host_space>;
template <class T>
using device_ragged = ragged_span<T, device_space>;

static_assert(std::is_trivially_copyable_v<host_ragged<float>>);
static_assert(std::is_trivially_copyable_v<device_ragged<const float>>);

/// @brief Checks that a host `indptr` is a valid CSR offset array for `nnz` packed elements.
/// @param[in] indptr [batch + 1] host offsets (empty = empty batch)
/// @param[in] nnz number of packed elements the offsets must cover
/// @param[in] what name of the argument, used in the error message
/// @throws dynllava::error naming `what`, the offending index and the values found.
inline void validate_indptr(host_span<const index_t> indptr, std::size_t nnz, const char* what) {
  if (indptr.empty()) {
    DYNLLAVA_EXPECTS(
        nnz == 0, "{}: empty indptr describes an empty batch, but {} values were given", what, nnz);
    return;
  }
  DYNLLAVA_EXPECTS(indptr[0] == 0, "{}: indptr[0] must be 0, got {}", what, indptr[0]);
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    DYNLLAVA_EXPECTS(indptr[b + 1] >= indptr[b],
                     "{}: indptr must be non-decreasing, got indptr[{}] = {} > indptr[{}] = {}",
                     what, b, indptr[b], b + 1, indptr[b + 1]);
  }
  DYNLLAVA_EXPECTS(static_cast<std::size_t>(indptr[indptr.size() - 1]) == nnz,
                   "{}: indptr[batch] must equal the number of elements it indexes ({}), got {}",
                   what, nnz, indptr[indptr.size() - 1]);
}

/// Validates both parts of a host ragged batch. @throws dynllava::error naming `what`.
template <class T>
void validate(host_ragged<T> r, const char* what) {
  validate_indptr(r.indptr, r.values.size(), what);
}

/// @brief Exclusive scan of per-sequence lengths into CSR offsets.
/// @param[in] lengths [batch] host, each >= 0
/// @param[out] indptr [batch + 1] host
/// @return total number of elements, `indptr[batch]`
/// @throws dynllava::error on a negative length, a size mismatch or `index_t` overflow.
inline index_t lengths_to_indptr(host_span<const index_t> lengths, host_span<index_t> indptr) {
  DYNLLAVA_EXPECTS(indptr.size() == lengths.size() + 1,
                   "lengths_to_indptr: indptr must have batch + 1 = {} entries, got {}",
                   lengths.size() + 1, indptr.size());
  long long total = 0;
  indptr[0] = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    DYNLLAVA_EXPECTS(lengths[b] >= 0, "lengths_to_indptr: lengths[{}] must be >= 0, got {}", b,
                     lengths[b]);
    total += lengths[b];
    DYNLLAVA_EXPECTS(total <= std::numeric_limits<index_t>::max(),
                     "lengths_to_indptr: total length {} exceeds the index_t maximum {}", total,
                     std::numeric_limits<index_t>::max());
    indptr[b + 1] = static_cast<index_t>(total);
  }
  return static_cast<index_t>(total);
}

}  // namespace dynllava

namespace dynllava {

/// @brief A ragged batch of rows of `width` elements (row-major), CSR by sequence: sequence `b`
/// owns rows `indptr[b] .. indptr[b + 1])`, i.e. `values[indptr[b] * width .. indptr[b+1] *
/// width)`. Non-owning, trivially copyable. Typical use: hidden states `[tokens, H]` of a ragged
/// batch.
template <class T, memory_space Space>
struct ragged_rows {
  span<const index_t, Space> indptr;  ///< [batch + 1] row offsets
  span<T, Space> values;              ///< [indptr[batch] * width]
  index_t width = 0;                  ///< elements per row, > 0

  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept {
    return indptr.size() == 0 ? 0 : indptr.size() - 1;
  }
  /// Total rows.
  DYNLLAVA_HOST_DEVICE constexpr std::size_t rows() const noexcept {
    return width > 0 ? values.size() / static_cast<std::size_t>(width) : 0;
  }
  DYNLLAVA_HOST_DEVICE constexpr index_t length(std::size_t b) const noexcept {
    return indptr[b + 1] - indptr[b];
  }
  /// Row `r` (global). @pre `r < rows()`.
  DYNLLAVA_HOST_DEVICE constexpr T* row(std::size_t r) const noexcept {
    return values.data() + r * static_cast<std::size_t>(width);
  }
};

template <class T>
using host_ragged_rows = ragged_rows<T, host_space>;

static_assert(std::is_trivially_copyable_v<ragged_rows<const float, device_space>>);

/// Validates a host ragged row batch: positive width, whole rows, CSR offsets over the rows.
/// @throws dynllava::error naming `what`.
template <class T>
void validate(host_ragged_rows<T> r, const char* what) {
  DYNLLAVA_EXPECTS(r.width > 0, "{}: width must be > 0, got {}", what, r.width);
  DYNLLAVA_EXPECTS(r.values.size() % static_cast<std::size_t>(r.width) == 0,
                   "{}: {} values are not a whole number of rows of width {}", what,
                   r.values.size(), r.width);
  validate_indptr(r.indptr, r.rows(), what);
}

}  // namespace dynllava
