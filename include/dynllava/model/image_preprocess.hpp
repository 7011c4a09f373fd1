// SPDX-License-Identifier: Apache-2.0
/// @file image_preprocess.hpp
/// @brief How a model folder's images become the tower's `pixel_values`: what its
/// `preprocessor_config.json` (Hugging Face layouts) or its `image_aspect_ratio` and CLIP
/// processor (original layouts) say. Pure data; reading it is `io/read_image_preprocess.hpp`,
/// computing the pixels is the LLaVA example's `clip_preprocess` (it needs an image codec).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/model/llava_config.hpp>

#include <array>
#include <cstdint>

namespace dynllava {

/// @brief The preprocessing steps, in order: pad to a square (`aspect == pad`, canvas
/// `pad_colour`), bicubic resize of the shorter side to `shortest_edge`, centre crop to
/// `crop_height x crop_width`, multiply by `rescale_factor`, subtract `image_mean` and divide by
/// `image_std` per channel. Skipped rescaling is `rescale_factor = 1`; skipped normalisation is
/// mean 0 and std 1. Defaults: LLaVA-1.5 (CLIP ViT-L/14-336's processor, padded).
struct image_preprocess {
  image_aspect aspect = image_aspect::pad;
  index_t shortest_edge = 336;
  index_t crop_height = 336;
  index_t crop_width = 336;
  /// `int(255 * mean)` of the processor's `image_mean` (LLaVA's `expand2square`, transformers'
  /// `LlavaImageProcessor.pad_to_square`), also when normalisation is off.
  std::array<std::uint8_t, 3> pad_colour{122, 116, 104};
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> image_mean{0.48145466F, 0.4578275F, 0.40821073F};
  std::array<float, 3> image_std{0.26862954F, 0.26130258F, 0.27577711F};
};

}  // namespace dynllava
