// SPDX-License-Identifier: Apache-2.0
/// @file masked_softmax.hpp
/// @brief MaskedSoftmax of Dynamic-LLaVA training (the reference `softmax_with_policy`), forward
/// and backward on the CPU, plus the shape checks shared with the CUDA twins.
///
/// For one row (query `i` of one head of a sequence of length `N`), scores `x_j`, mask `G_ij`,
/// `j` in [0, N):
///
///     A_i    = { j : j <= i } if causal, else every j      (the columns the row may use)
///     m_i    = max_{j in A_i} x_j                          (G does not enter the max)
///     e_j    = exp(x_j - m_i) for j in A_i, 0 otherwise
///     Gt_j   = 1 if j == i, else G_ij                      (the diagonal is forced to 1)
///     D_i    = sum_j e_j Gt_j + eps
///     attn_j = (e_j Gt_j + eps / N) / D_i                  for every j in [0, N)
///
/// This is exactly the reference: there the causal mask is an additive `-inf` bias applied
/// before `torch.max(attn, dim=-1)`, so the max runs over the whole row of biased scores (= over
/// `A_i`), columns outside `A_i` get `exp(-inf) = 0`, and `eps / N` is added to every column of
/// the row, masked or not, with `N` the full row length (the sequence length). Hence a row sums to
/// 1 and a masked column keeps the tiny weight `eps / N / D_i`. Deviations: a row whose scores in
/// `A_i` are all `-inf` gives `attn = 1 / N` (the reference gives NaN); NaN scores give
/// unspecified results.
///
/// Backward (upstream `g_j = dL/d attn_j`), with `u_j = e_j Gt_j` and `s = sum_j g_j attn_j`:
///
///     dL/dx_j  = u_j (g_j - s) / D_i  +  [j == argmax_i] * (-sum_k u_k (g_k - s) / D_i)
///     dL/dG_ij = e_j (g_j - s) / D_i  for j != i, and 0 on the diagonal
///
/// The second term of dL/dx is the gradient through `m_i` (not zero, because the `eps` terms
/// break shift invariance); it goes to the first column attaining the max, as in torch. Columns
/// outside `A_i` get zero gradient. `dL/dG` is summed over heads (the mask is shared by heads).
///
/// Layout: scores, attn and their gradients are `[heads, n_b, n_b]` per sequence; the mask and
/// its gradient are `[n_b, n_b]` per sequence; both packed as in `attention_layout.hpp`.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/train/attention_layout.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

namespace dynllava {

/// Options of MaskedSoftmax.
struct masked_softmax_params {
  double eps = 1e-6;   ///< the reference's eps, >= 0
  bool causal = true;  ///< columns j > i are excluded (as if their score were -inf)
  index_t heads = 1;   ///< score matrices per sequence, > 0
};

/// True when column `j` of row `i` takes part in the softmax.
DYNLLAVA_HOST_DEVICE constexpr bool masked_softmax_allowed(index_t i, index_t j,
                                                           bool causal) noexcept {
  return !causal || j <= i;
}

/// `exp(x - m)`, or 0 when the whole row is -inf (`m == -inf`).
template <class T>
DYNLLAVA_HOST_DEVICE T masked_softmax_exp(T x, T m) noexcept {
  if (m == -std::numeric_limits<T>::infinity()) return T(0);
#if defined(__CUDA_ARCH__)
  return ::exp(x - m);
#else
  return std::exp(x - m);
#endif
}

/// Checks the shapes of the MaskedSoftmax calls; returns the number of score elements.
/// @throws dynllava::error naming the argument and the expected versus actual size.
inline std::size_t check_masked_softmax_shapes(const char* fn,
                                               host_span<const index_t> token_indptr,
                                               std::size_t scores, std::size_t mask,
                                               std::size_t out_scores, std::size_t out_mask,
                                               masked_softmax_params p) {
  const std::size_t elements = attention_elements(token_indptr, p.heads, fn);
  const std::size_t mask_elements = elements / static_cast<std::size_t>(p.heads);
  DYNLLAVA_EXPECTS(scores == elements,
                   "{}: scores must hold heads * sum of n_b^2 = {} values, got {}", fn, elements,
                   scores);
  DYNLLAVA_EXPECTS(out_scores == elements,
                   "{}: the score-shaped output must hold {} values, got {}", fn, elements,
                   out_scores);
  DYNLLAVA_EXPECTS(mask == mask_elements, "{}: mask must hold sum of n_b^2 = {} values, got {}", fn,
                   mask_elements, mask);
  DYNLLAVA_EXPECTS(out_mask == mask_elements || out_mask == std::size_t(-1),
                   "{}: d_mask must hold sum of n_b^2 = {} values, got {}", fn, mask_elements,
                   out_mask);
  DYNLLAVA_EXPECTS(p.eps >= 0.0 && std::isfinite(p.eps), "{}: eps must be finite and >= 0, got {}",
                   fn, p.eps);
  return elements;
}

namespace cpu {

/// @brief MaskedSoftmax forward (see the file comment).
/// @param[in] token_indptr [batch + 1] host CSR offsets of the tokens
/// @param[in] scores [heads, n_b, n_b] per sequence, packed; host, read-only
/// @param[in] mask [n_b, n_b] per sequence, packed; host, read-only (e.g. `build_attention_mask`)
/// @param[out] attn same shape as `scores`; host
/// @param[in] params eps, causal, heads
/// @throws dynllava::error on a malformed `token_indptr`, a size mismatch or a bad `eps`/`heads`.
template <class T>
void masked_softmax_forward(host_span<const index_t> token_indptr,
                            std::type_identity_t<host_span<const T>> scores,
                            std::type_identity_t<host_span<const T>> mask, host_span<T> attn,
                            masked_softmax_params params = {}) {
  check_masked_softmax_shapes("masked_softmax_forward", token_indptr, scores.size(), mask.size(),
                              attn.size(), std::size_t(-1), params);
  const T eps = static_cast<T>(params.eps);
  const auto heads = static_cast<std::size_t>(params.heads);
  std::size_t mask_base = 0;
  for (std::size_t b = 0; b + 1 < token_indptr.size(); ++b) {
    const index_t n = token_indptr[b + 1] - token_indptr[b];
    const auto un = static_cast<std::size_t>(n);
    const T c = n > 0 ? eps / static_cast<T>(n) : T(0);
    for (std::size_t h = 0; h < heads; ++h) {
      for (index_t i = 0; i < n; ++i) {
        const std::size_t row = (heads * mask_base) + (h * un + static_cast<std::size_t>(i)) * un;
        const T* x = scores.data() + row;
        const T* g = mask.data() + mask_base + static_cast<std::size_t>(i) * un;
        T m = -std::numeric_limits<T>::infinity();
        for (index_t j = 0; j < n; ++j) {
          if (masked_softmax_allowed(i, j, params.causal) && x[j] > m) m = x[j];
        }
        T sum = T(0);
        for (index_t j = 0; j < n; ++j) {
          if (!masked_softmax_allowed(i, j, params.causal)) continue;
          sum += masked_softmax_exp(x[j], m) * (j == i ? T(1) : g[j]);
        }
        const T d = sum + eps;
        T* out = attn.data() + row;
        for (index_t j = 0; j < n; ++j) {
          const T u = masked_softmax_allowed(i, j, params.causal)
                          ? masked_softmax_exp(x[j], m) * (j == i ? T(1) : g[j])
                          : T(0);
          out[j] = (u + c) / d;
        }
      }
    }
    mask_base += un * un;
  }
}

/// @brief MaskedSoftmax backward (see the file comment): gradients of the scores and the mask.
/// @param[in] token_indptr [batch + 1] host CSR offsets of the tokens
/// @param[in] scores [heads, n_b, n_b] per sequence, packed; host, read-only (forward input)
/// @param[in] mask [n_b, n_b] per sequence, packed; host, read-only (forward input)
/// @param[in] d_attn same shape as `scores`; host, read-only: dL/d attn
/// @param[out] d_scores same shape as `scores`; host: dL/d scores
/// @param[out] d_mask same shape as `mask`; host: dL/d mask, summed over heads (overwritten)
/// @param[in] params the forward's eps, causal, heads
/// @throws dynllava::error on a malformed `token_indptr`, a size mismatch or a bad `eps`/`heads`.
template <class T>
void masked_softmax_backward(host_span<const index_t> token_indptr,
                             std::type_identity_t<host_span<const T>> scores,
                             std::type_identity_t<host_span<const T>> mask,
                             std::type_identity_t<host_span<const T>> d_attn, host_span<T> d_scores,
                             host_span<T> d_mask, masked_softmax_params params = {}) {
  check_masked_softmax_shapes("masked_softmax_backward", token_indptr, scores.size(), mask.size(),
                              d_scores.size(), d_mask.size(), params);
  DYNLLAVA_EXPECTS(d_attn.size() == scores.size(),
                   "masked_softmax_backward: d_attn must hold {} values, got {}", scores.size(),
                   d_attn.size());
  const T eps = static_cast<T>(params.eps);
  const auto heads = static_cast<std::size_t>(params.heads);
  std::size_t mask_base = 0;
  for (std::size_t b = 0; b + 1 < token_indptr.size(); ++b) {
    const index_t n = token_indptr[b + 1] - token_indptr[b];
    const auto un = static_cast<std::size_t>(n);
    const T c = n > 0 ? eps / static_cast<T>(n) : T(0);
    for (index_t i = 0; i < n; ++i) {
      const T* g = mask.data() + mask_base + static_cast<std::size_t>(i) * un;
      T* dg = d_mask.data() + mask_base + static_cast<std::size_t>(i) * un;
      for (index_t j = 0; j < n; ++j) dg[j] = T(0);
      for (std::size_t h = 0; h < heads; ++h) {
        const std::size_t row = (heads * mask_base) + (h * un + static_cast<std::size_t>(i)) * un;
        const T* x = scores.data() + row;
        const T* up = d_attn.data() + row;
        T* dx = d_scores.data() + row;
        T m = -std::numeric_limits<T>::infinity();
        index_t arg = -1;
        for (index_t j = 0; j < n; ++j) {
          if (masked_softmax_allowed(i, j, params.causal) && (arg < 0 || x[j] > m)) {
            m = x[j];
            arg = j;
          }
        }
        // sums over the row: u, g * u, g
        T sum_u = T(0), sum_gu = T(0), sum_g = T(0);
        for (index_t j = 0; j < n; ++j) {
          sum_g += up[j];
          if (!masked_softmax_allowed(i, j, params.causal)) continue;
          const T u = masked_softmax_exp(x[j], m) * (j == i ? T(1) : g[j]);
          sum_u += u;
          sum_gu += up[j] * u;
        }
        const T d = sum_u + eps;
        const T s = (sum_gu + c * sum_g) / d;
        const T d_max = -(sum_gu - s * sum_u) / d;
        for (index_t j = 0; j < n; ++j) {
          if (!masked_softmax_allowed(i, j, params.causal)) {
            dx[j] = T(0);
            continue;
          }
          const T e = masked_softmax_exp(x[j], m);
          const T u = e * (j == i ? T(1) : g[j]);
          dx[j] = u * (up[j] - s) / d + (j == arg ? d_max : T(0));
          if (j != i) dg[j] += e * (up[j] - s) / d;
        }
      }
    }
    mask_base += un * un;
  }
}

}  // namespace cpu

/// Execution-tag entry point. @see cpu::masked_softmax_forward
template <class T>
void masked_softmax_forward(host_t, host_span<const index_t> token_indptr,
                            std::type_identity_t<host_span<const T>> scores,
                            std::type_identity_t<host_span<const T>> mask, host_span<T> attn,
                            masked_softmax_params params = {}) {
  cpu::masked_softmax_forward<T>(token_indptr, scores, mask, attn, params);
}

/// Execution-tag entry point. @see cpu::masked_softmax_backward
template <class T>
void masked_softmax_backward(host_t, host_span<const index_t> token_indptr,
                             std::type_identity_t<host_span<const T>> scores,
                             std::type_identity_t<host_span<const T>> mask,
                             std::type_identity_t<host_span<const T>> d_attn, host_span<T> d_scores,
                             host_span<T> d_mask, masked_softmax_params params = {}) {
  cpu::masked_softmax_backward<T>(token_indptr, scores, mask, d_attn, d_scores, d_mask, params);
}

}  // namespace dynllava
