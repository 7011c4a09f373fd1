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
/// The names and shapes come from the tensor tables (predictor_weights.hpp).
/// F32, F16 and BF16 tensors are converted to fp32. A missing tensor, a tensor of another shape
/// or dtype, and an unexpected tensor under the prefix are errors naming the tensor.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/io/read_tensor.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/nn/tensor_table.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
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

  /// A tensor-table visitor: reads `prefix + s.name` of shape `s.shape` into `values`.
  template <class T>
  void operator()(const nn::tensor_spec& s, T& out) {
    io::read_tensor(ckpt_, use(s), s, out);
  }
  /// @throws dynllava::error listing tensors under the prefix that no layer uses.
  void expect_all_used(const char* what) const {
    std::vector<std::string> extra;
    for (const auto& n : ckpt_.names()) {
      if (n.rfind(prefix_, 0) == 0 && used_.count(n) == 0) extra.push_back(n);
    }
    DYNLLAVA_EXPECTS(extra.empty(),
                     "load {}: unexpected tensor {} (and {} more) under {}: the checkpoint does "
                     "not match the configured architecture",
                     what, extra.empty() ? "" : quote_untrusted(extra.front()),
                     extra.empty() ? 0 : extra.size() - 1, quote_untrusted(prefix_));
  }

 private:
  std::string use(const nn::tensor_spec& s) {
    std::string full = prefix_ + s.name;
    used_.insert(full);
    return full;
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
  image_predictor_weights w;
  visit_tensors(w, config, r);
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
  visit_tensors(w, config, r);
  r.expect_all_used("output predictor");
  return output_predictor(config, std::move(w));
}

}  // namespace dynllava
