// SPDX-License-Identifier: Apache-2.0
/// @file trace.hpp
/// @brief `cost::trace`: what one forward pass did, layer by layer, at the level of decisions
/// (rows computed, attention pairs, tokens cached). The cost model's FLOPs and KV bytes are pure
/// functions of a config and a trace; analytic schedules and the real pipeline both produce one.
#pragma once

#include <dynllava/cost/llava_sizes.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynllava::cost {

/// One decoder layer in one forward pass, summed over the sequences of the batch.
struct layer_trace {
  std::int64_t query_rows = 0;       ///< rows run through the layer (projections, MLP)
  std::int64_t attention_pairs = 0;  ///< (query, key) pairs scored, the query itself included
  std::int64_t kv_tokens = 0;        ///< tokens held in this layer's KV cache after the pass

  friend constexpr bool operator==(const layer_trace&, const layer_trace&) = default;
};

/// One forward pass (a prefill or one decode step) of a batch. Every count is a total over the
/// batch's sequences, so sequences of different lengths add up exactly.
///
/// - `layers[l]`: one entry per decoder layer (`[config.layers]`).
/// - `image_tokens_scored`, `image_attention_pairs`: image-predictor work: tokens scored and
///   the sum over sequences of `n_image^2` (its attention is bidirectional over a sequence's
///   image tokens).
/// - `output_tokens_scored`: tokens scored by the output-text predictor.
/// - `logit_rows`: rows that go through the final norm and `lm_head` (the rows whose logits are
///   needed: one per sequence per step when only the next token is sampled).
struct trace {
  std::vector<layer_trace> layers;
  std::int64_t image_tokens_scored = 0;
  std::int64_t image_attention_pairs = 0;
  std::int64_t output_tokens_scored = 0;
  std::int64_t logit_rows = 0;

  friend bool operator==(const trace&, const trace&) = default;

  /// Adds another sequence's trace of the same pass (same number of layers). An empty trace
  /// (no layers) takes the other's layer count, so a batch total can start from `trace{}`.
  /// @throws dynllava::error when both have layers and their counts differ.
  trace& operator+=(const trace& other) {
    if (layers.empty()) layers.resize(other.layers.size());
    DYNLLAVA_EXPECTS(layers.size() == other.layers.size(),
                     "trace +=: layer counts differ ({} vs {})", layers.size(),
                     other.layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      layers[l].query_rows += other.layers[l].query_rows;
      layers[l].attention_pairs += other.layers[l].attention_pairs;
      layers[l].kv_tokens += other.layers[l].kv_tokens;
    }
    image_tokens_scored += other.image_tokens_scored;
    image_attention_pairs += other.image_attention_pairs;
    output_tokens_scored += other.output_tokens_scored;
    logit_rows += other.logit_rows;
    return *this;
  }

  /// Tokens held in all layers' KV caches together after the pass.
  [[nodiscard]] std::int64_t total_kv_tokens() const noexcept {
    std::int64_t total = 0;
    for (const auto& layer : layers) total += layer.kv_tokens;
    return total;
  }
};

/// Checks a trace against a config: one entry per layer, no negative count, and at least one
/// attention pair per query row (every row attends to itself).
/// @throws dynllava::error naming the layer and field.
inline void validate(const llava_sizes& config, const trace& t) {
  DYNLLAVA_EXPECTS(t.layers.size() == static_cast<std::size_t>(config.layers),
                   "trace: expected one entry per layer ({}), got {}", config.layers,
                   t.layers.size());
  for (std::size_t l = 0; l < t.layers.size(); ++l) {
    const layer_trace& x = t.layers[l];
    DYNLLAVA_EXPECTS(x.query_rows >= 0 && x.attention_pairs >= 0 && x.kv_tokens >= 0,
                     "trace: layer {} has a negative count (rows {}, pairs {}, kv {})", l,
                     x.query_rows, x.attention_pairs, x.kv_tokens);
    DYNLLAVA_EXPECTS(x.attention_pairs >= x.query_rows,
                     "trace: layer {}: attention_pairs ({}) must be >= query_rows ({})", l,
                     x.attention_pairs, x.query_rows);
  }
  DYNLLAVA_EXPECTS(t.image_tokens_scored >= 0 && t.image_attention_pairs >= 0 &&
                       t.output_tokens_scored >= 0 && t.logit_rows >= 0,
                   "trace: predictor and logit counts must be >= 0 (image {}, pairs {}, "
                   "output {}, logits {})",
                   t.image_tokens_scored, t.image_attention_pairs, t.output_tokens_scored,
                   t.logit_rows);
}

}  // namespace dynllava::cost
