// SPDX-License-Identifier: Apache-2.0
/// @file llama_config.hpp
/// @brief Sizes of a LLaMA decoder (plus the Dynamic-LLaVA predictors) for cost accounting, with
/// the LLaVA-1.5 7B and 13B presets.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/score/predictor_config.hpp>

#include <cstdint>
#include <string_view>

namespace dynllava::cost {

/// The sizes that determine the FLOPs and KV-cache bytes of a LLaMA decoder: RMSNorm, RoPE,
/// multi-head attention without GQA (keys and values have `heads` heads too), SwiGLU MLP, no
/// biases. `predictor` gives the Dynamic-LLaVA predictors' sizes (METHOD.md section 3); its
/// `hidden` must equal `hidden`.
struct llama_config {
  std::string_view name = "custom";  ///< label for tables ("llava-1.5-7b", ...)
  index_t hidden = 4096;             ///< C, the residual width
  index_t layers = 32;               ///< decoder layers L
  index_t heads = 32;                ///< attention heads (query, key and value alike)
  index_t head_dim = 128;            ///< per-head width; `heads * head_dim` is the attention width
  index_t intermediate = 11008;      ///< I, the SwiGLU MLP width (gate, up: C -> I; down: I -> C)
  index_t vocab = 32000;             ///< V, rows of `lm_head`
  index_t kv_bytes_per_element = 2;  ///< bytes of one cached key or value element (2: fp16/bf16)
  index_t max_positions = 4096;      ///< trained context length (recorded, not enforced)
  predictor_config predictor{};      ///< Dynamic-LLaVA predictor sizes

  /// Attention width `heads * head_dim` (= `hidden` for LLaMA-1/2 and Vicuna).
  [[nodiscard]] constexpr std::int64_t attention_width() const noexcept {
    return static_cast<std::int64_t>(heads) * head_dim;
  }

  /// @throws dynllava::error naming the first field that is not positive or is inconsistent.
  void validate() const {
    DYNLLAVA_EXPECTS(hidden > 0, "llama_config: hidden must be > 0, got {}", hidden);
    DYNLLAVA_EXPECTS(layers > 0, "llama_config: layers must be > 0, got {}", layers);
    DYNLLAVA_EXPECTS(heads > 0, "llama_config: heads must be > 0, got {}", heads);
    DYNLLAVA_EXPECTS(head_dim > 0, "llama_config: head_dim must be > 0, got {}", head_dim);
    DYNLLAVA_EXPECTS(intermediate > 0, "llama_config: intermediate must be > 0, got {}",
                     intermediate);
    DYNLLAVA_EXPECTS(vocab > 0, "llama_config: vocab must be > 0, got {}", vocab);
    DYNLLAVA_EXPECTS(kv_bytes_per_element > 0,
                     "llama_config: kv_bytes_per_element must be > 0, got {}",
                     kv_bytes_per_element);
    DYNLLAVA_EXPECTS(max_positions > 0, "llama_config: max_positions must be > 0, got {}",
                     max_positions);
    DYNLLAVA_EXPECTS(predictor.hidden == hidden,
                     "llama_config: predictor.hidden must equal hidden ({}), got {}", hidden,
                     predictor.hidden);
    predictor.validate();
  }
};

/// LLaVA-1.5 7B (Vicuna-7B v1.5): C 4096, 32 layers, 32 heads of 128, MLP 11008, vocab 32000.
[[nodiscard]] inline llama_config llava_1_5_7b() {
  llama_config c;
  c.name = "llava-1.5-7b";
  c.predictor.hidden = c.hidden;
  return c;
}

/// LLaVA-1.5 13B (Vicuna-13B v1.5): C 5120, 40 layers, 40 heads of 128, MLP 13824, vocab 32000.
[[nodiscard]] inline llama_config llava_1_5_13b() {
  llama_config c;
  c.name = "llava-1.5-13b";
  c.hidden = 5120;
  c.layers = 40;
  c.heads = 40;
  c.head_dim = 128;
  c.intermediate = 13824;
  c.predictor.hidden = c.hidden;
  return c;
}

}  // namespace dynllava::cost
