// SPDX-License-Identifier: Apache-2.0
/// @file paper_formula.hpp
/// @brief The Dynamic-LLaVA paper's prefill FLOPs formula: per layer `32 B N C^2 + 4 B N^2 C`
/// with N the image tokens that layer sees (text tokens are left out).
///
/// It is the exact count (exact_flops.hpp) restricted to image tokens, with an MLP of width
/// `4 C`, a full (not causal) `N x N` attention, and no element-wise work: per token
/// `4 x 2 C^2` (q, k, v, o) `+ 3 x 2 C (4 C)` (SwiGLU) `= 32 C^2`, per pair `2 C + 2 C`.
/// docs/cost.md compares it with the count at LLaMA's real MLP width.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/schedule.hpp>

#include <variant>

namespace dynllava::cost {

/// Image tokens that decoder layer `layer` sees in prefill under schedule `s`: all of them in
/// full layers, `floor(n * keep)` after the split (FastV: layers >= K; Dynamic-LLaVA: layers
/// >= l). Dense and H2O (whose prefill is dense) see all in every layer.
[[nodiscard]] inline index_t paper_image_tokens(const schedule& s, index_t image_tokens,
                                                index_t layer) {
  if (const auto* f = std::get_if<fastv_schedule>(&s)) {
    return layer < f->layer ? image_tokens : ratio_budget(image_tokens, f->image_keep);
  }
  if (const auto* d = std::get_if<dynamic_llava_schedule>(&s)) {
    return layer < d->sparse_layer ? image_tokens : ratio_budget(image_tokens, d->vision_keep);
  }
  return image_tokens;
}

/// The paper's prefill FLOPs: the sum over layers of `32 B N_l C^2 + 4 B N_l^2 C`.
/// Paper values (LLaVA-1.5, N = 576): 7B 10.1 / 2.5 / 3.2 TFLOPs, 13B 19.6 / 4.7 / 6.0 for
/// dense / Dynamic-LLaVA / FastV.
/// @throws dynllava::error for an invalid config or schedule, `batch <= 0` or
///         `image_tokens < 0`.
[[nodiscard]] inline double paper_prefill_flops(const llava_sizes& config, const schedule& s,
                                                index_t batch, index_t image_tokens) {
  config.validate();
  validate(s, config.layers);
  DYNLLAVA_EXPECTS(batch > 0, "paper_prefill_flops: batch must be > 0, got {}", batch);
  DYNLLAVA_EXPECTS(image_tokens >= 0, "paper_prefill_flops: image_tokens must be >= 0, got {}",
                   image_tokens);
  const auto c = static_cast<double>(config.hidden);
  const auto b = static_cast<double>(batch);
  double total = 0;
  for (index_t l = 0; l < config.layers; ++l) {
    const auto n = static_cast<double>(paper_image_tokens(s, image_tokens, l));
    total += 32.0 * b * n * c * c + 4.0 * b * n * n * c;
  }
  return total;
}

}  // namespace dynllava::cost
