// SPDX-License-Identifier: Apache-2.0
/// @file llama_config.hpp
/// @brief Sizes of a LLaMA-architecture decoder, shared by the reference model (model/) and the
/// cost model (cost/).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>

#include <cstdint>
#include <string_view>

namespace dynllava {

/// @brief A LLaMA decoder: RMSNorm, rotate-half RoPE, multi-head attention without GQA (keys
/// and values have `heads` heads too), SwiGLU MLP, no biases. Defaults are LLaVA-1.5 7B's
/// (Vicuna-7B v1.5). `head_dim` defaults to `hidden / heads` of the initialiser's values, so
/// `llama_config{32, 4, 4, 64, 50}` has head_dim 8; set it again after changing `hidden` or
/// `heads` by assignment.
struct llama_config {
  index_t hidden = 4096;         ///< C, the residual width
  index_t layers = 32;           ///< decoder layers L
  index_t heads = 32;            ///< attention heads (query, key and value alike)
  index_t intermediate = 11008;  ///< I, the SwiGLU MLP width (gate, up: C -> I; down: I -> C)
  index_t vocab = 32000;         ///< V, rows of `embed_tokens` and `lm_head`
  float rms_eps = 1e-5f;
  double rope_theta = 10000.0;
  index_t head_dim = heads > 0 ? hidden / heads : 0;  ///< per-head width
  index_t max_positions = 4096;      ///< trained context length; the model's RoPE table covers it
  std::string_view name = "custom";  ///< label for tables ("llava-1.5-7b", ...)

  /// Attention width `heads * head_dim` (= `hidden` for LLaMA-1/2 and Vicuna).
  [[nodiscard]] constexpr std::int64_t attention_width() const noexcept {
    return static_cast<std::int64_t>(heads) * head_dim;
  }

  /// @throws dynllava::error naming the first field that is not positive.
  void validate() const {
    DYNLLAVA_EXPECTS(hidden > 0, "llama_config: hidden must be > 0, got {}", hidden);
    DYNLLAVA_EXPECTS(layers > 0, "llama_config: layers must be > 0, got {}", layers);
    DYNLLAVA_EXPECTS(heads > 0, "llama_config: heads must be > 0, got {}", heads);
    DYNLLAVA_EXPECTS(head_dim > 0, "llama_config: head_dim must be > 0, got {}", head_dim);
    DYNLLAVA_EXPECTS(intermediate > 0, "llama_config: intermediate must be > 0, got {}",
                     intermediate);
    DYNLLAVA_EXPECTS(vocab > 0, "llama_config: vocab must be > 0, got {}", vocab);
    DYNLLAVA_EXPECTS(max_positions > 0, "llama_config: max_positions must be > 0, got {}",
                     max_positions);
    DYNLLAVA_EXPECTS(rms_eps > 0.0f && rope_theta > 0.0,
                     "llama_config: rms_eps ({}) and rope_theta ({}) must be > 0", rms_eps,
                     rope_theta);
  }
};

}  // namespace dynllava
