// SPDX-License-Identifier: Apache-2.0
/// @file clip.hpp
/// @brief A reference CLIP ViT vision tower on the CPU (fp32), built from the nn/ blocks: the
/// patch convolution as im2col + one SGEMM, class and position embeddings, the pre-LayerNorm,
/// then pre-norm encoder layers (full multi-head attention with biases, MLP with quick GELU or
/// exact GELU). It returns the hidden states of one layer, as LLaVA takes its image features.
#pragma once

#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/model/clip_weights.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/attention.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief The vision tower. Owns its weights; `const` calls are thread-safe.
class clip_vision_tower {
 public:
  /// @throws dynllava::error on an invalid config or weights of another shape, naming the tensor.
  clip_vision_tower(const clip_config& c, clip_weights w) : c_(c), w_(std::move(w)) {
    validate(w_, c_);
  }

  const clip_config& config() const noexcept { return c_; }
  /// Encoder layers held: `encode` can return layers `0..held_layers()`.
  index_t held_layers() const noexcept { return w_.held_layers(); }
  /// Rows per image of `encode`'s output: `num_patches()` for `patch`, `num_positions()` with
  /// the class token (row 0) for `cls_patch`.
  index_t rows(vision_select_feature f) const noexcept {
    return f == vision_select_feature::patch ? c_.num_patches() : c_.num_positions();
  }
  /// Values of one preprocessed image, `C * S * S`.
  std::size_t pixels_per_image() const noexcept {
    const auto s = static_cast<std::size_t>(c_.image_size);
    return static_cast<std::size_t>(c_.channels) * s * s;
  }

  /// @brief Hidden states of layer `layer` (0 = the pre-LayerNorm output, `l` = after `l`
  /// encoder layers; Hugging Face's `hidden_states[layer]`) for `images` images. Only layers
  /// `0..layer-1` run. Each image is computed by its own BLAS calls: its features do not depend
  /// on the rest of the batch.
  /// @param pixels [images, C, S, S] host, row-major (CHW per image), normalised
  /// @param out [images, rows(feature), D] host; must not alias `pixels`
  /// @throws dynllava::error on a wrong size or a layer outside `[0, held_layers()]`.
  void encode(host_span<const float> pixels, std::size_t images, index_t layer,
              vision_select_feature feature, host_span<float> out) const {
    const auto D = static_cast<std::size_t>(c_.hidden);
    const auto out_rows = static_cast<std::size_t>(rows(feature));
    DYNLLAVA_EXPECTS(pixels.size() == images * pixels_per_image(),
                     "clip_vision_tower::encode: pixel_values must be [images = {}, C = {}, S = "
                     "{}, S = {}] ({} values), got {} values",
                     images, c_.channels, c_.image_size, c_.image_size, images * pixels_per_image(),
                     pixels.size());
    DYNLLAVA_EXPECTS(layer >= 0 && layer <= held_layers(),
                     "clip_vision_tower::encode: layer {} is not in [0, {}] (layers held)", layer,
                     held_layers());
    DYNLLAVA_EXPECTS(out.size() == images * out_rows * D,
                     "clip_vision_tower::encode: out must be [images = {}, rows = {}, D = {}] "
                     "({} values), got {} values",
                     images, out_rows, D, images * out_rows * D, out.size());
    if (images == 0) return;
    scratch s(c_);
    const std::size_t skip = feature == vision_select_feature::patch ? 1 : 0;
    for (std::size_t b = 0; b < images; ++b) {
      embed(pixels.data() + b * pixels_per_image(), s);
      for (index_t l = 0; l < layer; ++l) run_layer(w_.layers[static_cast<std::size_t>(l)], s);
      std::copy(s.h.begin() + static_cast<std::ptrdiff_t>(skip * D), s.h.end(),
                out.data() + b * out_rows * D);
    }
  }

  /// `encode` into a new `[images, rows(feature), D]` vector.
  std::vector<float> encode(const std::vector<float>& pixels, std::size_t images, index_t layer,
                            vision_select_feature feature) const {
    std::vector<float> out(images * static_cast<std::size_t>(rows(feature)) *
                           static_cast<std::size_t>(c_.hidden));
    encode(make_host_span(pixels), images, layer, feature, make_host_span(out));
    return out;
  }

 private:
  /// One image's buffers, reused for every layer and image of a call: the residual stream `h`,
  /// the normed rows, q/k/v, the attention output and a projection of `[T, D]` (`T` =
  /// `num_positions()`), the MLP's `[T, I]` and the im2col patches `[N, C * P * P]`.
  struct scratch {
    std::vector<float> h, x, q, k, v, att, tmp, mlp, patches;
    explicit scratch(const clip_config& c) {
      const auto T = static_cast<std::size_t>(c.num_positions());
      const auto D = static_cast<std::size_t>(c.hidden);
      const auto P = static_cast<std::size_t>(c.patch_size);
      h.resize(T * D);
      x.resize(T * D);
      q.resize(T * D);
      k.resize(T * D);
      v.resize(T * D);
      att.resize(T * D);
      tmp.resize(T * D);
      mlp.resize(T * static_cast<std::size_t>(c.intermediate));
      patches.resize(static_cast<std::size_t>(c.num_patches()) *
                     static_cast<std::size_t>(c.channels) * P * P);
    }
  };

  /// `s.h` = pre_layrnorm(class token and patch embeddings + position embeddings) of one image
  /// `px [C, S, S]`.
  void embed(const float* px, scratch& s) const {
    const auto D = static_cast<std::size_t>(c_.hidden);
    const auto C = static_cast<std::size_t>(c_.channels);
    const auto S = static_cast<std::size_t>(c_.image_size);
    const auto P = static_cast<std::size_t>(c_.patch_size);
    const auto G = static_cast<std::size_t>(c_.grid());
    // im2col: patch (gy, gx) is row gy * G + gx, its columns (channel, row, col) like the
    // convolution weight [D, C, P, P].
    float* col = s.patches.data();
    for (std::size_t gy = 0; gy < G; ++gy) {
      for (std::size_t gx = 0; gx < G; ++gx) {
        for (std::size_t ch = 0; ch < C; ++ch) {
          for (std::size_t ky = 0; ky < P; ++ky) {
            const float* src = px + (ch * S + gy * P + ky) * S + gx * P;
            col = std::copy(src, src + P, col);
          }
        }
      }
    }
    nn::linear(s.patches.data(), G * G, w_.patch_embed, s.h.data() + D);  // rows 1..N
    std::copy(w_.class_embed.begin(), w_.class_embed.end(), s.h.begin());
    for (std::size_t i = 0; i < s.h.size(); ++i) s.h[i] += w_.position_embed[i];
    nn::layer_norm(s.h.data(), G * G + 1, w_.pre_norm, c_.layer_norm_eps, s.h.data());
  }

  /// One pre-norm encoder layer on `s.h` in place.
  void run_layer(const clip_layer_weights& w, scratch& s) const {
    const auto D = static_cast<std::size_t>(c_.hidden);
    const auto T = static_cast<std::size_t>(c_.num_positions());
    const std::size_t TD = T * D;
    nn::layer_norm(s.h.data(), T, w.norm1, c_.layer_norm_eps, s.x.data());
    nn::linear(s.x.data(), T, w.q_proj, s.q.data());
    nn::linear(s.x.data(), T, w.k_proj, s.k.data());
    nn::linear(s.x.data(), T, w.v_proj, s.v.data());
    const nn::attention_options opt{c_.heads, c_.head_dim(), /*causal=*/false};
    nn::attention(opt, nn::no_cached_kv{}, {s.q.data(), D}, {s.k.data(), D}, {s.v.data(), D}, T,
                  s.att.data(), D);
    nn::linear(s.att.data(), T, w.out_proj, s.tmp.data());
    nn::add_inplace(s.h.data(), s.tmp.data(), TD);
    nn::layer_norm(s.h.data(), T, w.norm2, c_.layer_norm_eps, s.x.data());
    nn::linear(s.x.data(), T, w.fc1, s.mlp.data());
    const std::size_t TI = T * static_cast<std::size_t>(c_.intermediate);
    if (c_.activation == clip_activation::quick_gelu) {
      nn::quick_gelu_inplace(s.mlp.data(), TI);
    } else {
      nn::gelu_inplace(s.mlp.data(), TI);
    }
    nn::linear(s.mlp.data(), T, w.fc2, s.tmp.data());
    nn::add_inplace(s.h.data(), s.tmp.data(), TD);
  }

  clip_config c_;
  clip_weights w_;
};

}  // namespace dynllava
