// SPDX-License-Identifier: Apache-2.0
/// @file exact_flops.hpp
/// @brief The exact FLOP count of a forward pass of a LLaMA decoder (and the Dynamic-LLaVA
/// predictors) from a config and a `cost::trace`.
///
/// Conventions (docs/cost.md explains them):
/// - A multiply-add is 2 FLOPs. A matrix product `[m, k] x [k, n]` is `2 m k n`.
/// - Per query row of a layer: q, k, v projections `3 * 2 C A` and the output projection
///   `2 A C` (A = heads * head_dim, no GQA), the SwiGLU MLP `3 * 2 C I` (gate, up, down).
/// - Per (query, key) pair: `2 A` for `q . k` over all heads and `2 A` for the weighted sum of
///   values. Only the pairs a trace lists are counted (a causal prefill of n rows has
///   n (n + 1) / 2 pairs), not the masked half of a square score matrix.
/// - Element-wise work (counted unless `count_options::elementwise` is false; exp, erf and
///   rsqrt count 1 each): RMSNorm 4 per element (square, sum, scale, weight), two per layer;
///   RoPE 3 per element of q and k; softmax 6 per score and head (scale, max, subtract, exp,
///   sum, divide); SwiGLU activation 5 per MLP element (SiLU 4, product 1); residual adds 1 per
///   element, two per layer; LayerNorm 7 per element; exact GELU 5 per element; a bias add 1 per
///   output element.
/// - `lm_head` (`2 C V`) and the final RMSNorm only for `trace::logit_rows`.
/// - Not counted: embedding lookups (no arithmetic), sampling, top-k / gate selection and
///   gathers (comparisons and copies), the FastV / H2O attention statistics (by-products of the
///   attention already counted), the vision tower and the projector (identical for every
///   schedule: they run before the LLM).
#pragma once

#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/trace.hpp>

#include <cstdint>

namespace dynllava::cost {

/// What the exact count includes beyond matrix products.
struct count_options {
  bool elementwise = true;  ///< norms, RoPE, softmax, activations, residuals, biases
};

/// FLOPs of one forward pass, by component. Doubles: integers are exact up to 2^53 (9.0e15),
/// beyond that the relative rounding is below 1e-16.
struct flop_breakdown {
  double projections = 0;       ///< q, k, v, o projections of every layer
  double mlp = 0;               ///< gate, up, down products of every layer
  double attention_scores = 0;  ///< q . k over the listed pairs
  double attention_values = 0;  ///< probabilities x values over the listed pairs
  double elementwise = 0;       ///< norms, RoPE, softmax, SwiGLU activation, residual adds
  double lm_head = 0;           ///< final norm and `lm_head` of the logit rows
  double image_predictor = 0;   ///< Dynamic-LLaVA image predictor
  double output_predictor = 0;  ///< Dynamic-LLaVA output-text predictor

  /// The decoder layers alone (no lm_head, no predictors).
  [[nodiscard]] constexpr double layers() const noexcept {
    return projections + mlp + attention_scores + attention_values + elementwise;
  }
  [[nodiscard]] constexpr double total() const noexcept {
    return layers() + lm_head + image_predictor + output_predictor;
  }
  flop_breakdown& operator+=(const flop_breakdown& o) noexcept {
    projections += o.projections;
    mlp += o.mlp;
    attention_scores += o.attention_scores;
    attention_values += o.attention_values;
    elementwise += o.elementwise;
    lm_head += o.lm_head;
    image_predictor += o.image_predictor;
    output_predictor += o.output_predictor;
    return *this;
  }
};

namespace detail {

constexpr double to_flops(std::int64_t n) noexcept { return static_cast<double>(n); }

/// `Linear(in, out)` on one row: `2 in out`, plus `out` for the bias when element-wise work is
/// counted and the layer has one.
constexpr double linear_row(std::int64_t in, std::int64_t out, bool bias, bool elementwise) {
  return to_flops(2 * in * out) + (bias && elementwise ? to_flops(out) : 0.0);
}

}  // namespace detail

/// FLOPs of the image predictor per scored token, excluding its attention pairs (METHOD.md
/// section 3: LayerNorm + Linear(H, d) + GELU, `blocks` pre-LN transformer blocks, the
/// local/global mean, and the 256 -> 128 -> 2 head).
[[nodiscard]] inline double image_predictor_flops_per_token(const llava_sizes& config,
                                                            const count_options& options = {}) {
  const predictor_config& p = config.predictor;
  const bool e = options.elementwise;
  const std::int64_t d = p.d_model;
  double f = 0;
  if (e) f += detail::to_flops(7 * std::int64_t{p.hidden} + 5 * d);  // LayerNorm(H), GELU
  f += detail::linear_row(p.hidden, d, true, e);
  for (index_t b = 0; b < p.blocks; ++b) {
    f += detail::linear_row(d, 3 * d, false, e);                                // qkv, no bias
    f += detail::linear_row(d, d, true, e);                                     // attn.proj
    f += detail::linear_row(d, p.ffn, true, e);                                 // fc1
    f += detail::linear_row(p.ffn, d, true, e);                                 // fc2
    if (e) f += detail::to_flops(2 * 7 * d + 5 * std::int64_t{p.ffn} + 2 * d);  // norms, GELU, adds
  }
  if (e) f += detail::to_flops(d - p.local_dim);  // the global half's mean (one add per channel)
  std::int64_t in = d;
  for (index_t w : p.image_head) {
    f += detail::linear_row(in, w, true, e);
    if (e) f += detail::to_flops(5 * std::int64_t{w});  // GELU
    in = w;
  }
  f += detail::linear_row(in, 2, true, e);
  return f;
}

/// FLOPs of the image predictor per (query, key) pair of one sequence's image tokens, over all
/// its blocks: `2 d` for scores, `2 d` for values, and the softmax (6 per score and head).
[[nodiscard]] inline double image_predictor_flops_per_pair(const llava_sizes& config,
                                                           const count_options& options = {}) {
  const predictor_config& p = config.predictor;
  const std::int64_t per_block =
      4 * std::int64_t{p.d_model} + (options.elementwise ? 6 * std::int64_t{p.heads} : 0);
  return detail::to_flops(per_block * p.blocks);
}

/// FLOPs of the output-text predictor per scored token: LayerNorm(H), then Linear layers
/// H -> 512 -> 256 -> 128 -> 2 with exact GELU after each but the last.
[[nodiscard]] inline double output_predictor_flops_per_token(const llava_sizes& config,
                                                             const count_options& options = {}) {
  const predictor_config& p = config.predictor;
  const bool e = options.elementwise;
  double f = e ? detail::to_flops(7 * std::int64_t{p.hidden}) : 0.0;
  std::int64_t in = p.hidden;
  for (index_t w : p.output_head) {
    f += detail::linear_row(in, w, true, e);
    if (e) f += detail::to_flops(5 * std::int64_t{w});
    in = w;
  }
  f += detail::linear_row(in, 2, true, e);
  return f;
}

/// The exact FLOPs of the forward pass described by `t`.
/// @param[in] config model sizes (validated)
/// @param[in] t one forward pass, totals over the batch (validated against `config`)
/// @param[in] options whether element-wise work is counted
/// @throws dynllava::error when the config or the trace is invalid.
[[nodiscard]] inline flop_breakdown exact_flops(const llava_sizes& config, const trace& t,
                                                const count_options& options = {}) {
  config.validate();
  validate(config, t);
  const std::int64_t c = config.hidden;
  const std::int64_t a = config.attention_width();
  const std::int64_t i = config.intermediate;
  const bool e = options.elementwise;

  std::int64_t rows = 0;
  std::int64_t pairs = 0;
  for (const layer_trace& layer : t.layers) {
    rows += layer.query_rows;
    pairs += layer.attention_pairs;
  }
  const double r = detail::to_flops(rows);
  const double p = detail::to_flops(pairs);

  flop_breakdown f;
  f.projections = r * detail::to_flops(4 * 2 * c * a);
  f.mlp = r * detail::to_flops(3 * 2 * c * i);
  f.attention_scores = p * detail::to_flops(2 * a);
  f.attention_values = p * detail::to_flops(2 * a);
  if (e) {
    const std::int64_t per_row = 2 * 4 * c    // two RMSNorms
                                 + 2 * 3 * a  // RoPE on q and k
                                 + 5 * i      // SiLU(gate) * up
                                 + 2 * c;     // two residual adds
    f.elementwise =
        r * detail::to_flops(per_row) + p * detail::to_flops(6 * std::int64_t{config.heads});
  }
  f.lm_head =
      detail::to_flops(t.logit_rows) * detail::to_flops(2 * c * config.vocab + (e ? 4 * c : 0));
  f.image_predictor =
      detail::to_flops(t.image_tokens_scored) * image_predictor_flops_per_token(config, options) +
      detail::to_flops(t.image_attention_pairs) * image_predictor_flops_per_pair(config, options);
  f.output_predictor =
      detail::to_flops(t.output_tokens_scored) * output_predictor_flops_per_token(config, options);
  return f;
}

}  // namespace dynllava::cost
