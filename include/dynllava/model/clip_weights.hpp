// SPDX-License-Identifier: Apache-2.0
/// @file clip_weights.hpp
/// @brief Host fp32 weights of a CLIP ViT vision tower and their tensor table (the names of
/// Hugging Face's `CLIPVisionModel` relative to its `vision_model.` prefix), from which
/// validation, checkpoint loading (io/load_clip.hpp) and random init derive.
///
/// The weights hold the first `layers.size()` encoder layers only, any number from 0 to the
/// config's `layers`: LLaVA takes the hidden states of layer `llava_config::vision_layer()`
/// (23 of ViT-L's 24) and never runs the rest. `post_layernorm` (which only feeds CLIP's pooled
/// output) is never held either. A loader reads the table's tensors and ignores the others.
#pragma once

#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace dynllava {

/// One pre-norm encoder layer, row-major `[out, in]` like the checkpoints, all with biases.
struct clip_layer_weights {
  nn::layer_norm_weights norm1;                         ///< layer_norm1: [D]
  nn::linear_weights q_proj, k_proj, v_proj, out_proj;  ///< self_attn.*: [D, D] + [D]
  nn::layer_norm_weights norm2;                         ///< layer_norm2: [D]
  nn::linear_weights fc1;                               ///< mlp.fc1: [I, D] + [I]
  nn::linear_weights fc2;                               ///< mlp.fc2: [D, I] + [D]
};

/// The weights of a tower's embeddings, pre-LayerNorm and first `layers.size()` layers.
struct clip_weights {
  /// embeddings.patch_embedding: the `[D, C, P, P]` convolution as the Linear of its im2col
  /// form, `in = C * P * P`, no bias.
  nn::linear_weights patch_embed;
  std::vector<float> class_embed;     ///< embeddings.class_embedding: [D]
  std::vector<float> position_embed;  ///< embeddings.position_embedding.weight: [N + 1, D]
  nn::layer_norm_weights pre_norm;    ///< pre_layrnorm (sic): [D]
  std::vector<clip_layer_weights> layers;

  /// Encoder layers held.
  index_t held_layers() const noexcept { return static_cast<index_t>(layers.size()); }
};

/// @brief The tower's tensor table for its first `layers` encoder layers: announces every tensor
/// of `w` by its `CLIPVisionModel` name without the `vision_model.` prefix
/// (`embeddings.patch_embedding.weight`, `encoder.layers.{i}.self_attn.q_proj.weight`, ...) with
/// its shape from `c` to `f(const nn::tensor_spec&, vector&)`. Mutable `w` is shaped by `c`;
/// const `w` is checked.
/// @throws dynllava::error when `layers` is not in `[0, c.layers]`.
template <nn::maybe_const<clip_weights> W, class F>
void visit_tensors(W& w, const clip_config& c, index_t layers, F&& f) {
  DYNLLAVA_EXPECTS(layers >= 0 && layers <= c.layers,
                   "clip weights: {} layers requested of a {}-layer tower", layers, c.layers);
  const index_t D = c.hidden, I = c.intermediate;
  nn::visit_conv_as_linear(w.patch_embed, "embeddings.patch_embedding", c.channels, c.patch_size, D,
                           f);
  f(nn::tensor_spec{"embeddings.class_embedding", {D}, nn::tensor_role::embedding, 0},
    w.class_embed);
  f(nn::tensor_spec{"embeddings.position_embedding.weight",
                    {c.num_positions(), D},
                    nn::tensor_role::embedding,
                    0},
    w.position_embed);
  nn::visit_layer_norm(w.pre_norm, "pre_layrnorm", D, f);
  nn::expect_count(w.layers, layers, "clip weights: layers");
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const std::string p = "encoder.layers." + std::to_string(l);
    auto& lw = w.layers[l];
    nn::visit_linear(lw.q_proj, p + ".self_attn.q_proj", D, D, true, f);
    nn::visit_linear(lw.k_proj, p + ".self_attn.k_proj", D, D, true, f);
    nn::visit_linear(lw.v_proj, p + ".self_attn.v_proj", D, D, true, f);
    nn::visit_linear(lw.out_proj, p + ".self_attn.out_proj", D, D, true, f);
    nn::visit_layer_norm(lw.norm1, p + ".layer_norm1", D, f);
    nn::visit_linear(lw.fc1, p + ".mlp.fc1", D, I, true, f);
    nn::visit_linear(lw.fc2, p + ".mlp.fc2", I, D, true, f);
    nn::visit_layer_norm(lw.norm2, p + ".layer_norm2", D, f);
  }
}

/// @throws dynllava::error when `c` is invalid, `w` holds more layers than `c`, or a tensor's
/// size disagrees with `c` (naming it).
inline void validate(const clip_weights& w, const clip_config& c) {
  c.validate();
  DYNLLAVA_EXPECTS(w.held_layers() <= c.layers,
                   "clip weights: {} layers held, but the tower has {}", w.held_layers(), c.layers);
  visit_tensors(w, c, w.held_layers(), nn::size_checker{"clip weights"});
}

/// Random weights of the first `layers` encoder layers (all when -1) for tests and benchmarks,
/// seeded: Linear and convolution weights uniform +-1/sqrt(fan_in), norms N(1, 0.1), class and
/// position embeddings N(0, 1), drawn in the table's order.
inline clip_weights random_clip_weights(const clip_config& c, std::uint64_t seed,
                                        index_t layers = -1) {
  c.validate();
  clip_weights w;
  visit_tensors(w, c, layers < 0 ? c.layers : layers, nn::random_filler{std::mt19937_64(seed)});
  return w;
}

}  // namespace dynllava
