// SPDX-License-Identifier: Apache-2.0
/// @file llava_config.hpp
/// @brief Everything a LLaVA-1.5 checkpoint's `config.json` says about the model: the language
/// model, the CLIP tower, the projector, how image features are taken and spliced, and the
/// Dynamic-LLaVA predictors when the checkpoint has them. Pure data; reading it from JSON is
/// `io/` (it needs the JSON library).
#pragma once

#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/core/predictor_config.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace dynllava {

/// The projector between the vision tower and the language model (`mm_projector_type`).
enum class projector_type : std::uint8_t {
  linear,      ///< one Linear(D, H) with bias
  mlp2x_gelu,  ///< Linear(D, H) -> exact GELU -> Linear(H, H), both with bias (LLaVA-1.5)
};

/// Which tower outputs become image rows (`mm_vision_select_feature`).
enum class vision_select_feature : std::uint8_t {
  patch,      ///< drop the class token: `num_patches()` rows (LLaVA-1.5)
  cls_patch,  ///< keep it: `num_positions()` rows
};

/// How an image is fitted to the tower's square input (`image_aspect_ratio`).
enum class image_aspect : std::uint8_t {
  pad,     ///< pad to a square with the CLIP mean colour, then resize (LLaVA-1.5)
  square,  ///< resize the shortest edge and centre-crop, as CLIPImageProcessor alone does
};

/// What a Dynamic-LLaVA checkpoint's `sparse_config` says beyond the predictors' sizes: the
/// settings it was trained with, which a caller may take as its `sparsifier_options`.
struct sparse_settings {
  /// `sparse_layer`: the layer whose input the predictors score (the reader checks it against
  /// the language model's layers; `validate` does not, so small test models keep the default)
  index_t sparse_layer = 2;
  double vision_keep_rate = 0.2;       ///< `vision_keep_rate`: image tokens kept
  double output_text_keep_rate = 0.5;  ///< `output_text_keep_rate` (training target)
  bool output_predictor = true;        ///< the checkpoint has the output-text predictor
};

/// @brief A LLaVA-1.5 model.
struct llava_config {
  llama_config text;   ///< the language model
  clip_config vision;  ///< the CLIP tower
  projector_type projector = projector_type::mlp2x_gelu;
  /// Hidden states of this tower layer are the image features: `-2` is the second-to-last
  /// (LLaVA-1.5), non-negative values count from the embeddings (0 = the pre-LayerNorm
  /// output, `vision.layers` = the last layer).
  index_t vision_select_layer = -2;
  vision_select_feature select_feature = vision_select_feature::patch;
  image_aspect aspect = image_aspect::pad;
  /// The id that stands for `<image>` in a token sequence (-200 in the original code; the
  /// Hugging Face layout gives it a vocabulary id such as 32000).
  std::int64_t image_token_id = -200;
  std::int64_t bos_token_id = 1;
  std::int64_t eos_token_id = 2;
  /// Dynamic-LLaVA predictors (`sparse_config`); empty for a plain LLaVA checkpoint.
  std::optional<predictor_config> predictors;
  /// The rest of `sparse_config`; meaningful only when `predictors` is set.
  sparse_settings sparse{};

  /// The tower layer whose output is taken, in `[0, vision.layers]` (also the number of encoder
  /// layers that must run), or -1 when `vision_select_layer` is out of range.
  [[nodiscard]] constexpr index_t vision_layer() const noexcept {
    const index_t l =
        vision_select_layer < 0 ? vision.layers + 1 + vision_select_layer : vision_select_layer;
    return l >= 0 && l <= vision.layers ? l : -1;
  }
  /// Image rows spliced where `<image>` stands: 576 for LLaVA-1.5.
  [[nodiscard]] constexpr index_t image_tokens() const noexcept {
    return select_feature == vision_select_feature::patch ? vision.num_patches()
                                                          : vision.num_positions();
  }

  /// @throws dynllava::error naming the first field that is out of range.
  void validate() const {
    text.validate();
    vision.validate();
    DYNLLAVA_EXPECTS(vision_layer() >= 0,
                     "llava_config: vision_select_layer {} is outside the tower's {} layers "
                     "(allowed: -{}..{})",
                     vision_select_layer, vision.layers, vision.layers + 1, vision.layers);
    if (predictors) {
      predictors->validate();
      DYNLLAVA_EXPECTS(predictors->hidden == text.hidden,
                       "llava_config: the predictors' hidden size {} differs from the language "
                       "model's {}",
                       predictors->hidden, text.hidden);
      DYNLLAVA_EXPECTS(sparse.vision_keep_rate >= 0.0 && sparse.vision_keep_rate <= 1.0 &&
                           sparse.output_text_keep_rate >= 0.0 &&
                           sparse.output_text_keep_rate <= 1.0,
                       "llava_config: keep rates must be in [0, 1], got {} and {}",
                       sparse.vision_keep_rate, sparse.output_text_keep_rate);
    }
  }
};

}  // namespace dynllava
