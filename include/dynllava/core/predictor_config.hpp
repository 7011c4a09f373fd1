// SPDX-License-Identifier: Apache-2.0
/// @file predictor_config.hpp
/// @brief Sizes of the Dynamic-LLaVA predictors. Defaults are the released checkpoints'
/// (`sparse_config`: d_model 512, nhead 8, dim_feedforward 2048); only `hidden` (the LLM's
/// hidden size H: 4096 for 7B, 5120 for 13B) must be set. Smaller sizes serve tests.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>

#include <array>

namespace dynllava {

struct predictor_config {
  index_t hidden = 4096;  ///< H, the LLM hidden size (input width of both predictors)
  // image predictor
  index_t d_model = 512;    ///< width of `down_mlp` output and the transformer blocks
  index_t heads = 8;        ///< attention heads (head dim = d_model / heads)
  index_t ffn = 2048;       ///< transformer MLP width
  index_t blocks = 2;       ///< transformer blocks
  index_t local_dim = 256;  ///< channels kept per token; the rest are averaged (global)
  std::array<index_t, 2> image_head{256, 128};  ///< `output_mlp` hidden widths (-> 2)
  // output-text predictor
  std::array<index_t, 3> output_head{512, 256,
                                     128};  ///< `output_mlp` widths after LayerNorm (-> 2)
  float layer_norm_eps = 1e-5f;

  /// @throws dynllava::error naming the field when a size is inconsistent.
  void validate() const {
    DYNLLAVA_EXPECTS(hidden > 0, "predictor_config: hidden must be > 0, got {}", hidden);
    DYNLLAVA_EXPECTS(d_model > 0 && heads > 0 && d_model % heads == 0,
                     "predictor_config: d_model ({}) must be a positive multiple of heads ({})",
                     d_model, heads);
    DYNLLAVA_EXPECTS(ffn > 0 && blocks >= 0,
                     "predictor_config: ffn ({}) must be > 0 and blocks "
                     "({}) >= 0",
                     ffn, blocks);
    DYNLLAVA_EXPECTS(local_dim > 0 && local_dim < d_model,
                     "predictor_config: local_dim must be in (0, d_model = {}), got {}", d_model,
                     local_dim);
    for (index_t w : image_head) {
      DYNLLAVA_EXPECTS(w > 0, "predictor_config: image_head widths must be > 0, got {}", w);
    }
    for (index_t w : output_head) {
      DYNLLAVA_EXPECTS(w > 0, "predictor_config: output_head widths must be > 0, got {}", w);
    }
    DYNLLAVA_EXPECTS(layer_norm_eps > 0.0f, "predictor_config: layer_norm_eps must be > 0, got {}",
                     layer_norm_eps);
  }
};

}  // namespace dynllava
