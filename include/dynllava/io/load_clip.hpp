// SPDX-License-Identifier: Apache-2.0
/// @file load_clip.hpp
/// @brief Loads the CLIP vision tower (clip_weights.hpp) and the LLaVA projector
/// (projector.hpp) from a checkpoint by their tensor tables' names, under a prefix. F32, F16
/// and BF16 become fp32.
#pragma once

#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/io/read_tensor.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/model/clip_weights.hpp>
#include <dynllava/model/projector.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <string>
#include <vector>

namespace dynllava {

/// @brief Reads the tower's embeddings, pre-LayerNorm and first `layers` encoder layers (all
/// when -1) from `ckpt` as `prefix + name`: `prefix` is `vision_model.` for a CLIP folder,
/// `model.vision_tower.vision_tower.vision_model.` inside an original LLaVA checkpoint,
/// `vision_tower.vision_model.` or `vision_tower.` in Hugging Face's layouts. The later layers
/// and `post_layernorm` are not read (LLaVA needs the first `llava_config::vision_layer()`).
/// @throws dynllava::error naming a missing, wrongly shaped or non-float tensor, or when
/// `layers` exceeds `config.layers`.
inline clip_weights load_clip_weights(const io::checkpoint& ckpt, const clip_config& config,
                                      const std::string& prefix, index_t layers = -1) {
  config.validate();
  clip_weights w;
  visit_tensors(w, config, layers < 0 ? config.layers : layers,
                io::prefixed_tensor_reader{ckpt, prefix});
  return w;
}

/// @brief Reads the projector's Linears `prefix + names.first` (and `prefix + names.second`
/// for `mlp2x_gelu`), `.weight` and `.bias` each, from `ckpt`.
/// @throws dynllava::error naming a missing, wrongly shaped or non-float tensor.
inline projector_weights load_projector_weights(const io::checkpoint& ckpt,
                                                const projector_config& config,
                                                const projector_names& names,
                                                const std::string& prefix = "") {
  config.validate();
  projector_weights w;
  visit_tensors(w, config, names, io::prefixed_tensor_reader{ckpt, prefix});
  return w;
}

}  // namespace dynllava
