// SPDX-License-Identifier: Apache-2.0
/// @file attention_layout.hpp
/// @brief Packed layout of per-sequence square attention matrices in a ragged batch.
///
/// Sequence `b` of a ragged batch (`token_indptr`, length `n_b`) owns an `[n_b, n_b]` matrix per
/// head. Matrices are packed back to back: sequence `b` starts at element
/// `heads * square_offset[b]`, `square_offset[b] = sum_{b' < b} n_b'^2`, and holds
/// `[heads, n_b, n_b]` row-major (query row `i`, key column `j`). Offsets are 64-bit: a batch of
/// long sequences easily exceeds 2^31 elements.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>
#include <cstdint>

namespace dynllava {

/// @brief Sequence that owns packed token `t`: the `b` with `indptr[b] <= t < indptr[b + 1]`
/// (binary search; empty sequences are skipped). @pre `0 <= t < indptr[batch]`.
/// @param[in] indptr [batch + 1] offsets (any memory space the caller can read)
DYNLLAVA_HOST_DEVICE constexpr std::size_t sequence_of_token(const index_t* indptr,
                                                             std::size_t batch,
                                                             index_t t) noexcept {
  std::size_t lo = 0, hi = batch;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (indptr[mid] <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// @brief Exclusive scan of `n_b^2`: `square_offset[b]` for `b` in [0, batch].
/// @param[in] token_indptr [batch + 1] host, validated CSR offsets
/// @param[out] square_offset [batch + 1] host
/// @throws dynllava::error on a size mismatch.
inline void square_offsets(host_span<const index_t> token_indptr,
                           host_span<std::int64_t> square_offset) {
  const std::size_t batch = token_indptr.empty() ? 0 : token_indptr.size() - 1;
  DYNLLAVA_EXPECTS(square_offset.size() == batch + 1,
                   "square_offsets: square_offset must have batch + 1 = {} entries, got {}",
                   batch + 1, square_offset.size());
  square_offset[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const auto n = static_cast<std::int64_t>(token_indptr[b + 1] - token_indptr[b]);
    square_offset[b + 1] = square_offset[b] + n * n;
  }
}

/// @brief Number of packed elements of `[heads, n_b, n_b]` matrices over the batch.
/// @param[in] token_indptr [batch + 1] host CSR offsets (validated here)
/// @param[in] heads matrices per sequence, > 0
/// @param[in] what argument name for error messages
/// @throws dynllava::error on a malformed `token_indptr` or `heads <= 0`.
inline std::size_t attention_elements(host_span<const index_t> token_indptr, index_t heads,
                                      const char* what) {
  DYNLLAVA_EXPECTS(heads > 0, "{}: heads must be > 0, got {}", what, heads);
  const std::size_t nnz =
      token_indptr.empty() ? 0 : static_cast<std::size_t>(token_indptr[token_indptr.size() - 1]);
  validate_indptr(token_indptr, nnz, what);
  std::size_t total = 0;
  for (std::size_t b = 0; b + 1 < token_indptr.size(); ++b) {
    const auto n = static_cast<std::size_t>(token_indptr[b + 1] - token_indptr[b]);
    total += n * n;
  }
  return total * static_cast<std::size_t>(heads);
}

}  // namespace dynllava
