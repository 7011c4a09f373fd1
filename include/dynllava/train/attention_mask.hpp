// SPDX-License-Identifier: Apache-2.0
/// @file attention_mask.hpp
/// @brief Keep mask -> per-sequence attention mask `G` for MaskedSoftmax (CPU), and its backward.
///
/// For sequence `b` (length `n`, keep values `keep[indptr[b] + j]`), query row `i`, key column `j`:
///
///     G_ij = 0        if j > i                      (causal)
///     G_ij = 1        if j == i                     (the diagonal is always kept)
///     G_ij = keep_j   if j < i and layer >= sparse_layer
///     G_ij = 1        if j < i and layer <  sparse_layer   (layers below l see everything)
///
/// `keep` may be hard (0/1) or soft; its gradient is `d_keep_j = sum_{i > j} dG_ij` in layers
/// `>= sparse_layer` and 0 below. Layout of `G`: `[n_b, n_b]` per sequence, packed as in
/// `attention_layout.hpp` with `heads = 1` (the mask is shared by every head).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/train/attention_layout.hpp>

#include <cstddef>
#include <type_traits>

namespace dynllava {

/// Which layer the mask is for.
struct attention_mask_params {
  index_t layer = 0;         ///< decoder layer index, >= 0
  index_t sparse_layer = 2;  ///< first layer that applies the keep mask (METHOD.md: l = 2)
};

/// @brief Entry `G_ij` (see the file comment). Shared by the CPU and CUDA implementations.
template <class T>
DYNLLAVA_HOST_DEVICE T attention_mask_entry(index_t i, index_t j, T keep_j, bool sparse) noexcept {
  if (j > i) return T(0);
  if (j == i || !sparse) return T(1);
  return keep_j;
}

/// Checks the shapes of the mask calls; returns the number of mask elements.
/// @throws dynllava::error naming the argument and the expected versus actual size.
inline std::size_t check_attention_mask_shapes(const char* fn,
                                               host_span<const index_t> token_indptr,
                                               std::size_t keep, std::size_t mask,
                                               attention_mask_params p) {
  const std::size_t elements = attention_elements(token_indptr, 1, fn);
  const std::size_t nnz =
      token_indptr.empty() ? 0 : static_cast<std::size_t>(token_indptr[token_indptr.size() - 1]);
  DYNLLAVA_EXPECTS(keep == nnz, "{}: keep must have one value per token ({}), got {}", fn, nnz,
                   keep);
  DYNLLAVA_EXPECTS(mask == elements, "{}: mask must hold sum of n_b^2 = {} values, got {}", fn,
                   elements, mask);
  DYNLLAVA_EXPECTS(p.layer >= 0 && p.sparse_layer >= 0,
                   "{}: layer and sparse_layer must be >= 0, got {} and {}", fn, p.layer,
                   p.sparse_layer);
  return elements;
}

namespace cpu {

/// @brief Builds the attention mask of every sequence for one layer.
/// @param[in] token_indptr [batch + 1] host CSR offsets of the tokens
/// @param[in] keep [num_tokens] host, read-only: keep values (1 keep, 0 drop; soft allowed)
/// @param[out] mask [sum_b n_b^2] host: `G` of each sequence, packed
/// @param[in] params layer and sparse layer
/// @throws dynllava::error on a malformed `token_indptr` or a size mismatch.
template <class T>
void build_attention_mask(host_span<const index_t> token_indptr,
                          std::type_identity_t<host_span<const T>> keep, host_span<T> mask,
                          attention_mask_params params = {}) {
  check_attention_mask_shapes("build_attention_mask", token_indptr, keep.size(), mask.size(),
                              params);
  const bool sparse = params.layer >= params.sparse_layer;
  std::size_t at = 0;
  for (std::size_t b = 0; b + 1 < token_indptr.size(); ++b) {
    const index_t n = token_indptr[b + 1] - token_indptr[b];
    const T* k = keep.data() + token_indptr[b];
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < n; ++j) mask[at++] = attention_mask_entry<T>(i, j, k[j], sparse);
    }
  }
}

/// @brief Gradient of `keep` from the gradient of the mask.
/// @param[in] token_indptr [batch + 1] host CSR offsets of the tokens
/// @param[in] d_mask [sum_b n_b^2] host, read-only: dL/dG
/// @param[out] d_keep [num_tokens] host: dL/d keep (overwritten)
/// @param[in] params layer and sparse layer (the same as in the forward)
/// @throws dynllava::error on a malformed `token_indptr` or a size mismatch.
template <class T>
void attention_mask_backward(host_span<const index_t> token_indptr,
                             std::type_identity_t<host_span<const T>> d_mask, host_span<T> d_keep,
                             attention_mask_params params = {}) {
  check_attention_mask_shapes("attention_mask_backward", token_indptr, d_keep.size(), d_mask.size(),
                              params);
  const bool sparse = params.layer >= params.sparse_layer;
  std::size_t base = 0;
  for (std::size_t b = 0; b + 1 < token_indptr.size(); ++b) {
    const index_t n = token_indptr[b + 1] - token_indptr[b];
    const auto un = static_cast<std::size_t>(n);
    for (index_t j = 0; j < n; ++j) {
      T acc = T(0);
      if (sparse) {
        for (index_t i = j + 1; i < n; ++i) {
          acc += d_mask[base + static_cast<std::size_t>(i) * un + static_cast<std::size_t>(j)];
        }
      }
      d_keep[static_cast<std::size_t>(token_indptr[b] + j)] = acc;
    }
    base += un * un;
  }
}

}  // namespace cpu

/// Execution-tag entry point. @see cpu::build_attention_mask
template <class T>
void build_attention_mask(host_t, host_span<const index_t> token_indptr,
                          std::type_identity_t<host_span<const T>> keep, host_span<T> mask,
                          attention_mask_params params = {}) {
  cpu::build_attention_mask<T>(token_indptr, keep, mask, params);
}

/// Execution-tag entry point. @see cpu::attention_mask_backward
template <class T>
void attention_mask_backward(host_t, host_span<const index_t> token_indptr,
                             std::type_identity_t<host_span<const T>> d_mask, host_span<T> d_keep,
                             attention_mask_params params = {}) {
  cpu::attention_mask_backward<T>(token_indptr, d_mask, d_keep, params);
}

}  // namespace dynllava
