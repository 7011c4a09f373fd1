// SPDX-License-Identifier: Apache-2.0
/// @file load_llama.hpp
/// @brief Loads a LLaMA decoder's weights from a Hugging Face checkpoint by the tensor table's
/// names (llama_weights.hpp), under an optional prefix. F32, F16 and BF16 become fp32.
#pragma once

#include <dynllava/core/llama_config.hpp>
#include <dynllava/io/read_tensor.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <string>
#include <vector>

namespace dynllava {

/// @brief Reads every tensor of the table from `ckpt` (`prefix + name`, shapes from `config`).
/// Tensors the table does not name (the vision tower, the projector, the predictors) are
/// ignored. @throws dynllava::error naming a missing or wrongly shaped or typed tensor.
inline llama_weights load_llama_weights(const io::checkpoint& ckpt, const llama_config& config,
                                        const std::string& prefix = "") {
  config.validate();
  llama_weights w;
  visit_tensors(w, config, io::prefixed_tensor_reader{ckpt, prefix});
  return w;
}

}  // namespace dynllava
