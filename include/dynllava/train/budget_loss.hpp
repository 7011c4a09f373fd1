// SPDX-License-Identifier: Apache-2.0
/// @file budget_loss.hpp
/// @brief The keep-budget loss of Dynamic-LLaVA training (CPU), forward and gradient w.r.t. the
/// masks, and the per-sequence terms shared with the CUDA twins.
///
///     L = weight * [ mean_b (r_img - mean(M_img_b))^2 + mean_b T_b ]
///     T_b = (r_out - mean(M_out_b))^2   if the answer has >= min_output_tokens tokens
///     T_b = 0                            otherwise (no gradient either)
///
/// with `r_img = 0.2`, `r_out = 0.5`, `min_output_tokens = 50`, `weight = 100` by default (the
/// reference trainer's `vision_keep_rate`, `output_text_keep_rate`,
/// `output_text_len_for_training`, `mask_loss_weight`). Each mean over `b` runs over every
/// sequence of that ragged batch (short answers count as 0, as in the reference). The image
/// term of an empty image sequence is 0 (the reference has a fixed 576 image tokens); a batch
/// of zero sequences contributes 0. Gradients:
///
///     dL/dM_img_b,j = weight * 2 (mean(M_img_b) - r_img) / (B_img * n_img_b) * d_loss
///     dL/dM_out_b,j = weight * 2 (mean(M_out_b) - r_out) / (B_out * n_out_b) * d_loss  (long b)
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <cmath>
#include <cstddef>
#include <type_traits>

namespace dynllava {

/// Targets and weight of the budget loss (reference defaults).
struct budget_loss_params {
  double image_keep_rate = 0.2;    ///< r_img, in [0, 1]
  double output_keep_rate = 0.5;   ///< r_out, in [0, 1]
  index_t min_output_tokens = 50;  ///< answers shorter than this have no text term, >= 0
  double weight = 100.0;           ///< mask_loss_weight, finite
};

/// @brief Whether sequence `b`'s term is active and its target: the image term is active for a
/// non-empty sequence, the text term for an answer of at least `min_tokens` tokens.
DYNLLAVA_HOST_DEVICE constexpr bool budget_term_active(index_t length,
                                                       index_t min_tokens) noexcept {
  return length > 0 && length >= min_tokens;
}

/// Checks the arguments of the budget-loss calls. @throws dynllava::error
inline void check_budget_loss_args(const char* fn, host_span<const index_t> image_indptr,
                                   std::size_t image_mask, std::size_t d_image,
                                   host_span<const index_t> output_indptr, std::size_t output_mask,
                                   std::size_t d_output, budget_loss_params p) {
  validate_indptr(image_indptr, image_mask, "budget_loss: image_indptr");
  validate_indptr(output_indptr, output_mask, "budget_loss: output_indptr");
  DYNLLAVA_EXPECTS(d_image == image_mask && d_output == output_mask,
                   "{}: gradients must match the masks ({} image, {} output values), got {} and {}",
                   fn, image_mask, output_mask, d_image, d_output);
  DYNLLAVA_EXPECTS(p.image_keep_rate >= 0.0 && p.image_keep_rate <= 1.0,
                   "{}: image_keep_rate must be in [0, 1], got {}", fn, p.image_keep_rate);
  DYNLLAVA_EXPECTS(p.output_keep_rate >= 0.0 && p.output_keep_rate <= 1.0,
                   "{}: output_keep_rate must be in [0, 1], got {}", fn, p.output_keep_rate);
  DYNLLAVA_EXPECTS(p.min_output_tokens >= 0, "{}: min_output_tokens must be >= 0, got {}", fn,
                   p.min_output_tokens);
  DYNLLAVA_EXPECTS(std::isfinite(p.weight), "{}: weight must be finite, got {}", fn, p.weight);
}

namespace cpu {

namespace detail {

/// `mean_b (target - mean(M_b))^2` over the active sequences (inactive count as 0).
template <class T>
T budget_term(host_span<const index_t> indptr, host_span<const T> mask, T target,
              index_t min_tokens) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  if (batch == 0) return T(0);
  T total = T(0);
  for (std::size_t b = 0; b < batch; ++b) {
    const index_t n = indptr[b + 1] - indptr[b];
    if (!budget_term_active(n, min_tokens)) continue;
    T sum = T(0);
    for (index_t j = indptr[b]; j < indptr[b + 1]; ++j) sum += mask[static_cast<std::size_t>(j)];
    const T diff = target - sum / static_cast<T>(n);
    total += diff * diff;
  }
  return total / static_cast<T>(batch);
}

template <class T>
void budget_term_grad(host_span<const index_t> indptr, host_span<const T> mask, T target,
                      index_t min_tokens, T scale, host_span<T> grad) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  for (std::size_t b = 0; b < batch; ++b) {
    const index_t n = indptr[b + 1] - indptr[b];
    const bool active = budget_term_active(n, min_tokens);
    T sum = T(0);
    if (active) {
      for (index_t j = indptr[b]; j < indptr[b + 1]; ++j) sum += mask[static_cast<std::size_t>(j)];
    }
    const T g = active ? scale * T(2) * (sum / static_cast<T>(n) - target) /
                             (static_cast<T>(batch) * static_cast<T>(n))
                       : T(0);
    for (index_t j = indptr[b]; j < indptr[b + 1]; ++j) grad[static_cast<std::size_t>(j)] = g;
  }
}

}  // namespace detail

/// @brief Budget loss forward (see the file comment).
/// @param[in] image_indptr [batch_img + 1] host CSR offsets of the image masks
/// @param[in] image_mask [num_image_tokens] host, read-only: keep values of image tokens
/// @param[in] output_indptr [batch_out + 1] host CSR offsets of the answers' masks
/// @param[in] output_mask [num_output_tokens] host, read-only: keep values of output tokens
/// @param[in] params targets, answer-length threshold and weight
/// @return the loss (without the CE term)
/// @throws dynllava::error on malformed offsets, a size mismatch or parameters out of range.
template <class T>
T budget_loss_forward(host_span<const index_t> image_indptr,
                      std::type_identity_t<host_span<const T>> image_mask,
                      host_span<const index_t> output_indptr,
                      std::type_identity_t<host_span<const T>> output_mask,
                      budget_loss_params params = {}) {
  check_budget_loss_args("budget_loss_forward", image_indptr, image_mask.size(), image_mask.size(),
                         output_indptr, output_mask.size(), output_mask.size(), params);
  const T img =
      detail::budget_term<T>(image_indptr, image_mask, static_cast<T>(params.image_keep_rate), 0);
  const T out =
      detail::budget_term<T>(output_indptr, output_mask, static_cast<T>(params.output_keep_rate),
                             params.min_output_tokens);
  return static_cast<T>(params.weight) * (img + out);
}

/// @brief Budget loss gradient w.r.t. both masks.
/// @param[in] image_indptr, image_mask, output_indptr, output_mask as in the forward
/// @param[in] d_loss upstream gradient of the loss (1 for the loss itself)
/// @param[out] d_image_mask [num_image_tokens] host: dL/dM_img
/// @param[out] d_output_mask [num_output_tokens] host: dL/dM_out (0 for short answers)
/// @param[in] params as in the forward
/// @throws dynllava::error on malformed offsets, a size mismatch or parameters out of range.
template <class T>
void budget_loss_backward(host_span<const index_t> image_indptr,
                          std::type_identity_t<host_span<const T>> image_mask,
                          host_span<const index_t> output_indptr,
                          std::type_identity_t<host_span<const T>> output_mask, T d_loss,
                          host_span<T> d_image_mask, host_span<T> d_output_mask,
                          budget_loss_params params = {}) {
  check_budget_loss_args("budget_loss_backward", image_indptr, image_mask.size(),
                         d_image_mask.size(), output_indptr, output_mask.size(),
                         d_output_mask.size(), params);
  const T scale = static_cast<T>(params.weight) * d_loss;
  detail::budget_term_grad<T>(image_indptr, image_mask, static_cast<T>(params.image_keep_rate), 0,
                              scale, d_image_mask);
  detail::budget_term_grad<T>(output_indptr, output_mask, static_cast<T>(params.output_keep_rate),
                              params.min_output_tokens, scale, d_output_mask);
}

}  // namespace cpu

/// Execution-tag entry point. @see cpu::budget_loss_forward
template <class T>
T budget_loss_forward(host_t, host_span<const index_t> image_indptr,
                      std::type_identity_t<host_span<const T>> image_mask,
                      host_span<const index_t> output_indptr,
                      std::type_identity_t<host_span<const T>> output_mask,
                      budget_loss_params params = {}) {
  return cpu::budget_loss_forward<T>(image_indptr, image_mask, output_indptr, output_mask, params);
}

/// Execution-tag entry point. @see cpu::budget_loss_backward
template <class T>
void budget_loss_backward(host_t, host_span<const index_t> image_indptr,
                          std::type_identity_t<host_span<const T>> image_mask,
                          host_span<const index_t> output_indptr,
                          std::type_identity_t<host_span<const T>> output_mask, T d_loss,
                          host_span<T> d_image_mask, host_span<T> d_output_mask,
                          budget_loss_params params = {}) {
  cpu::budget_loss_backward<T>(image_indptr, image_mask, output_indptr, output_mask, d_loss,
                               d_image_mask, d_output_mask, params);
}

}  // namespace dynllava
