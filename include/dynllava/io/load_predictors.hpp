// SPDX-License-Identifier: Apache-2.0
/// @file load_predictors.hpp
/// @brief Loads the predictors from a checkpoint by the official state-dict names.
///
/// Names (prefix configurable; defaults are the Dynamic-LLaVA checkpoints'):
///   model.image_score_predictor.down_mlp.{0,1}.{weight,bias}
///   model.image_score_predictor.transformer.{i}.{norm1,norm2}.{weight,bias}
///   model.image_score_predictor.transformer.{i}.attn.qkv.weight, .attn.proj.{weight,bias}
///   model.image_score_predictor.transformer.{i}.mlp.{fc1,fc2}.{weight,bias}
///   model.image_score_predictor.output_mlp.{0,2,4}.{weight,bias}
///   model.output_text_score_predictor.output_mlp.{0,1,3,5,7}.{weight,bias}
/// F32, F16 and BF16 tensors are converted to fp32. A missing tensor, a tensor of another shape
/// or dtype, and an unexpected tensor under the prefix are errors naming the tensor.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/predictor_config.hpp>
#include <dynllava/score/predictor_weights.hpp>

#include <set>
#include <string>
#include <vector>

namespace dynllava {

inline constexpr const char* image_predictor_prefix = "model.image_score_predictor.";
inline constexpr const char* output_predictor_prefix = "model.output_text_score_predictor.";

namespace detail {

/// Reads tensors under one prefix and remembers which names were used.
class prefixed_reader {
 public:
  prefixed_reader(const io::checkpoint& ckpt, std::string prefix)
      : ckpt_(ckpt), prefix_(std::move(prefix)) {}

  layer_norm_weights norm(const std::string& name, index_t dim) {
    return {read(name + ".weight", {dim}), read(name + ".bias", {dim})};
  }
  linear_weights linear(const std::string& name, index_t in, index_t out, bool bias) {
    linear_weights w;
    w.in = in;
    w.out = out;
    w.weight = read(name + ".weight", {out, in});
    if (bias) w.bias = read(name + ".bias", {out});
    return w;
  }
  /// @throws dynllava::error listing tensors under the prefix that no layer uses.
  void expect_all_used(const char* what) const {
    std::vector<std::string> extra;
    for (const auto& n : ckpt_.names()) {
      if (n.rfind(prefix_, 0) == 0 && used_.count(n) == 0) extra.push_back(n);
    }
    DYNLLAVA_EXPECTS(extra.empty(),
                     "load {}: unexpected tensor {} (and {} more) under {}: the checkpoint does "
                     "not match the configured architecture", what,
                     extra.empty() ? "" : extra.front(), extra.empty() ? 0 : extra.size() - 1,
                     prefix_);
  }

 private:
  std::vector<float> read(const std::string& name, std::vector<std::int64_t> shape) {
    const std::string full = prefix_ + name;
    used_.insert(full);
    return ckpt_.read_f32(full, shape);
  }
  const io::checkpoint& ckpt_;
  std::string prefix_;
  std::set<std::string> used_;
};

}  // namespace detail

/// @brief Loads the image predictor. @throws dynllava::error naming the offending tensor.
inline image_predictor load_image_predictor(const io::checkpoint& ckpt,
                                            const predictor_config& config,
                                            const std::string& prefix = image_predictor_prefix) {
  config.validate();
  detail::prefixed_reader r(ckpt, prefix);
  const index_t d = config.d_model;
  image_predictor_weights w;
  w.down_norm = r.norm("down_mlp.0", config.hidden);
  w.down = r.linear("down_mlp.1", config.hidden, d, true);
  for (index_t i = 0; i < config.blocks; ++i) {
    const std::string p = "transformer." + std::to_string(i);
    transformer_block_weights b;
    b.norm1 = r.norm(p + ".norm1", d);
    b.qkv = r.linear(p + ".attn.qkv", d, 3 * d, false);
    b.proj = r.linear(p + ".attn.proj", d, d, true);
    b.norm2 = r.norm(p + ".norm2", d);
    b.fc1 = r.linear(p + ".mlp.fc1", d, config.ffn, true);
    b.fc2 = r.linear(p + ".mlp.fc2", config.ffn, d, true);
    w.blocks.push_back(std::move(b));
  }
  w.head[0] = r.linear("output_mlp.0", d, config.image_head[0], true);
  w.head[1] = r.linear("output_mlp.2", config.image_head[0], config.image_head[1], true);
  w.head[2] = r.linear("output_mlp.4", config.image_head[1], 2, true);
  r.expect_all_used("image predictor");
  return image_predictor(config, std::move(w));
}

/// @brief Loads the output-text predictor. @throws dynllava::error naming the offending tensor.
inline output_predictor load_output_predictor(const io::checkpoint& ckpt,
                                              const predictor_config& config,
                                              const std::string& prefix = output_predictor_prefix) {
  config.validate();
  detail::prefixed_reader r(ckpt, prefix);
  output_predictor_weights w;
  w.norm = r.norm("output_mlp.0", config.hidden);
  const std::array<index_t, 5> dims{config.hidden, config.output_head[0], config.output_head[1],
                                    config.output_head[2], 2};
  for (std::size_t i = 0; i < 4; ++i) {
    w.head[i] = r.linear("output_mlp." + std::to_string(2 * i + 1), dims[i], dims[i + 1], true);
  }
  r.expect_all_used("output predictor");
  return output_predictor(config, std::move(w));
}

}  // namespace dynllava
