// SPDX-License-Identifier: Apache-2.0
/// @file clip_config.hpp
/// @brief Sizes of a CLIP ViT vision tower as LLaVA uses it. Defaults are
/// `openai/clip-vit-large-patch14-336` (ViT-L/14 at 336 px).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>

#include <cmath>
#include <cstdint>

namespace dynllava {

/// The MLP activation of a CLIP encoder layer (`hidden_act`).
enum class clip_activation : std::uint8_t {
  quick_gelu,  ///< `x * sigmoid(1.702 x)` (OpenAI CLIP)
  gelu,        ///< exact erf GELU
};

/// @brief A CLIP ViT: conv patch embedding without bias, a class embedding, learned position
/// embeddings (`num_positions()` rows), a pre-LayerNorm, `layers` pre-norm encoder layers
/// (LayerNorm, multi-head attention with biases, LayerNorm, MLP `fc1 -> act -> fc2`), and a
/// post-LayerNorm that LLaVA never uses.
struct clip_config {
  index_t image_size = 336;     ///< square input side, pixels
  index_t patch_size = 14;      ///< square patch side; `image_size % patch_size == 0`
  index_t channels = 3;         ///< input channels
  index_t hidden = 1024;        ///< D, the residual width
  index_t layers = 24;          ///< encoder layers
  index_t heads = 16;           ///< attention heads; `hidden % heads == 0`
  index_t intermediate = 4096;  ///< MLP width
  float layer_norm_eps = 1e-5f;
  clip_activation activation = clip_activation::quick_gelu;

  /// Patches per side, `image_size / patch_size`.
  [[nodiscard]] constexpr index_t grid() const noexcept {
    return patch_size > 0 ? image_size / patch_size : 0;
  }
  /// Patch tokens, `grid()^2` (576 for ViT-L/14-336).
  [[nodiscard]] constexpr index_t num_patches() const noexcept { return grid() * grid(); }
  /// Rows of the position embedding: the class token and the patches (577).
  [[nodiscard]] constexpr index_t num_positions() const noexcept { return num_patches() + 1; }
  /// Per-head width.
  [[nodiscard]] constexpr index_t head_dim() const noexcept {
    return heads > 0 ? hidden / heads : 0;
  }

  /// @throws dynllava::error naming the first field that is out of range.
  void validate() const {
    DYNLLAVA_EXPECTS(image_size > 0, "clip_config: image_size must be > 0, got {}", image_size);
    DYNLLAVA_EXPECTS(patch_size > 0 && image_size % patch_size == 0,
                     "clip_config: patch_size must be > 0 and divide image_size ({}), got {}",
                     image_size, patch_size);
    DYNLLAVA_EXPECTS(channels > 0, "clip_config: channels must be > 0, got {}", channels);
    DYNLLAVA_EXPECTS(layers > 0, "clip_config: layers must be > 0, got {}", layers);
    DYNLLAVA_EXPECTS(heads > 0 && hidden > 0 && hidden % heads == 0,
                     "clip_config: hidden ({}) must be a positive multiple of heads ({})", hidden,
                     heads);
    DYNLLAVA_EXPECTS(intermediate > 0, "clip_config: intermediate must be > 0, got {}",
                     intermediate);
    DYNLLAVA_EXPECTS(std::isfinite(layer_norm_eps) && layer_norm_eps > 0.0f,
                     "clip_config: layer_norm_eps must be finite and > 0, got {}", layer_norm_eps);
    // Index arithmetic on the patch grid uses index_t.
    DYNLLAVA_EXPECTS(static_cast<std::int64_t>(grid()) * grid() < (std::int64_t{1} << 30),
                     "clip_config: {} patches per side is too many", grid());
  }
};

}  // namespace dynllava
