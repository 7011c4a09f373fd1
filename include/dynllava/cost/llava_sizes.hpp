// SPDX-License-Identifier: Apache-2.0
/// @file llava_sizes.hpp
/// @brief What the cost model needs to know of a LLaVA model: its LLaMA decoder (the same
/// `llama_config` that `llama_model` runs), the Dynamic-LLaVA predictors and the KV-cache
/// element size, with the LLaVA-1.5 7B and 13B presets.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/core/predictor_config.hpp>

namespace dynllava::cost {

/// @brief A `llama_config` (its fields are this struct's) plus the sizes that only the cost
/// model needs. `predictor` gives the Dynamic-LLaVA predictors' sizes (METHOD.md section 3);
/// its `hidden` must equal `hidden`.
struct llava_sizes : llama_config {
  predictor_config predictor{};      ///< Dynamic-LLaVA predictor sizes
  index_t kv_bytes_per_element = 2;  ///< bytes of one cached key or value element (2: fp16/bf16)

  /// @throws dynllava::error naming the first field that is not positive or is inconsistent.
  void validate() const {
    llama_config::validate();
    DYNLLAVA_EXPECTS(kv_bytes_per_element > 0,
                     "cost::llava_sizes: kv_bytes_per_element must be > 0, got {}",
                     kv_bytes_per_element);
    DYNLLAVA_EXPECTS(predictor.hidden == hidden,
                     "cost::llava_sizes: predictor.hidden must equal hidden ({}), got {}", hidden,
                     predictor.hidden);
    predictor.validate();
  }
};

/// LLaVA-1.5 7B (Vicuna-7B v1.5): C 4096, 32 layers, 32 heads of 128, MLP 11008, vocab 32000.
[[nodiscard]] inline llava_sizes llava_1_5_7b() {
  llava_sizes c;
  c.name = "llava-1.5-7b";
  c.predictor.hidden = c.hidden;
  return c;
}

/// LLaVA-1.5 13B (Vicuna-13B v1.5): C 5120, 40 layers, 40 heads of 128, MLP 13824, vocab 32000.
[[nodiscard]] inline llava_sizes llava_1_5_13b() {
  llava_sizes c;
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
