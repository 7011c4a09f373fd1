// SPDX-License-Identifier: Apache-2.0
/// @file llama_weights.hpp
/// @brief Host fp32 weights of a LLaMA decoder and their tensor table (Hugging Face names), from
/// which validation, checkpoint loading (load_llama.hpp) and random init derive.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace dynllava {

/// One decoder layer's weights, row-major `[out, in]` like the checkpoints; no biases.
struct llama_layer_weights {
  std::vector<float> attn_norm;       ///< input_layernorm: [H]
  nn::linear_weights wq, wk, wv, wo;  ///< self_attn.{q,k,v,o}_proj: [H, H] each
  std::vector<float> mlp_norm;        ///< post_attention_layernorm: [H]
  nn::linear_weights w_gate, w_up;    ///< mlp.{gate,up}_proj: [I, H]
  nn::linear_weights w_down;          ///< mlp.down_proj: [H, I]
};

/// All weights of a LLaMA decoder.
struct llama_weights {
  nn::stored_matrix embed;  ///< model.embed_tokens: [vocab, H], in its stored width
  std::vector<llama_layer_weights> layers;
  std::vector<float> final_norm;  ///< model.norm: [H]
  nn::linear_weights lm_head;     ///< lm_head: [vocab, H]
};

/// @brief The decoder's tensor table: announces every tensor of `w` by its Hugging Face name
/// (`model.layers.{i}.self_attn.q_proj.weight`, ...) with its shape from `c` to
/// `f(const nn::tensor_spec&, vector&)`. Mutable `w` is shaped by `c`; const `w` is checked.
template <nn::maybe_const<llama_weights> W, class F>
void visit_tensors(W& w, const llama_config& c, F&& f) {
  const index_t H = c.hidden, I = c.intermediate;
  f(nn::tensor_spec{"model.embed_tokens.weight", {c.vocab, H}, nn::tensor_role::embedding, 0},
    w.embed);
  nn::expect_count(w.layers, c.layers, "llama weights: layers");
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    auto& lw = w.layers[l];
    f(nn::tensor_spec{p + ".input_layernorm.weight", {H}, nn::tensor_role::norm_weight, 0},
      lw.attn_norm);
    nn::visit_linear(lw.wq, p + ".self_attn.q_proj", H, H, false, f);
    nn::visit_linear(lw.wk, p + ".self_attn.k_proj", H, H, false, f);
    nn::visit_linear(lw.wv, p + ".self_attn.v_proj", H, H, false, f);
    nn::visit_linear(lw.wo, p + ".self_attn.o_proj", H, H, false, f);
    f(nn::tensor_spec{p + ".post_attention_layernorm.weight", {H}, nn::tensor_role::norm_weight, 0},
      lw.mlp_norm);
    nn::visit_linear(lw.w_gate, p + ".mlp.gate_proj", H, I, false, f);
    nn::visit_linear(lw.w_up, p + ".mlp.up_proj", H, I, false, f);
    nn::visit_linear(lw.w_down, p + ".mlp.down_proj", I, H, false, f);
  }
  f(nn::tensor_spec{"model.norm.weight", {H}, nn::tensor_role::norm_weight, 0}, w.final_norm);
  nn::visit_linear(w.lm_head, "lm_head", H, c.vocab, false, f);
}

/// @throws dynllava::error naming the first tensor whose shape disagrees with `c`.
inline void validate(const llama_weights& w, const llama_config& c) {
  c.validate();
  visit_tensors(w, c, nn::size_checker{"llama weights"});
}

/// Random weights for tests, examples and benchmarks, seeded: Linear weights uniform
/// +-1/sqrt(fan_in), norms N(1, 0.1), embeddings N(0, 1), drawn in the table's order.
inline llama_weights random_llama_weights(const llama_config& c, std::uint64_t seed) {
  c.validate();
  llama_weights w;
  visit_tensors(w, c, nn::random_filler{std::mt19937_64(seed)});
  return w;
}

}  // namespace dynllava
