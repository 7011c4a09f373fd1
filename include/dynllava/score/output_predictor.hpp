// SPDX-License-Identifier: Apache-2.0
/// @file output_predictor.hpp
/// @brief The Dynamic-LLaVA output-text predictor on the CPU (fp32): a per-token MLP, so a
/// token's decision depends on that token alone (which keeps KV-cache decoding consistent).
///
/// `logits = L7(GELU(L5(GELU(L3(GELU(L1(LayerNorm(x))))))))`, `[tokens, 2]`, channel 0 = keep.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/predictor_weights.hpp>

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief The output-text predictor. Owns its fp32 weights; `const` calls are thread-safe.
class output_predictor {
 public:
  /// @throws dynllava::error when a weight's shape disagrees with `config`.
  output_predictor(const predictor_config& config, output_predictor_weights weights)
      : config_(config), w_(std::move(weights)) {
    validate(w_, config_);
  }

  const predictor_config& config() const noexcept { return config_; }
  /// Width H of the hidden states it reads.
  index_t hidden() const noexcept { return config_.hidden; }

  /// @brief 2-way logits for every token of a ragged batch (per token; batching is irrelevant).
  /// @param[in] hidden ragged `[tokens, H]` host rows
  /// @param[out] logits [tokens, 2] host; channel 0 = keep
  /// @throws dynllava::error on a width other than H or a wrongly sized output.
  void logits(host_t, host_ragged_rows<const float> hidden, host_span<float> logits) const {
    DYNLLAVA_EXPECTS(hidden.width == config_.hidden,
                     "output_predictor: hidden rows must have width H = {}, got {}", config_.hidden,
                     hidden.width);
    validate(hidden, "output_predictor: hidden");
    const std::size_t n = hidden.rows();
    DYNLLAVA_EXPECTS(logits.size() == 2 * n,
                     "output_predictor: logits must have {} entries (2 per token), got {}", 2 * n,
                     logits.size());
    if (n == 0) return;
    std::vector<float> t(hidden.values.size());
    nn::layer_norm(hidden.values.data(), n, w_.norm, config_.layer_norm_eps, t.data());
    for (std::size_t i = 0; i < 3; ++i) {
      t = nn::linear(t, n, w_.head[i]);
      nn::gelu_inplace(t);
    }
    nn::linear(t.data(), n, w_.head[3], logits.data());
  }

  /// @brief Ranking scores `logit0 - logit1` (the keep gate is `logit0 > logit1`, see gate.hpp).
  /// @param[out] scores [tokens] host
  void score(host_t, host_ragged_rows<const float> hidden, host_span<float> scores) const {
    DYNLLAVA_EXPECTS(scores.size() * static_cast<std::size_t>(std::max<index_t>(hidden.width, 1)) ==
                         hidden.values.size(),
                     "output_predictor: scores must have one entry per token, got {}",
                     scores.size());
    std::vector<float> l(2 * scores.size());
    logits(host, hidden, make_host_span(l));
    for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = keep_margin(l[2 * i], l[2 * i + 1]);
  }

 private:
  predictor_config config_;
  output_predictor_weights w_;
};
static_assert(two_way_predictor<output_predictor, host_t>);

}  // namespace dynllava
