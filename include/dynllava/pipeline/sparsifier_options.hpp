// SPDX-License-Identifier: Apache-2.0
/// @file sparsifier_options.hpp
/// @brief What the sparsifier prunes and how (`sparsifier_options`), and what a run kept
/// (`run_stats`).
#pragma once

#include <dynllava/core/config.hpp>

#include <cstdint>
#include <vector>

namespace dynllava {

/// How decode without KV cache chooses the kept output tokens.
enum class output_rule : std::uint8_t {
  per_sequence_argmax,      ///< default: each token kept iff logit0 > logit1 (matches the KV mode)
  released_batch_max_topk,  ///< the released code's kept sets: k = max over the batch of argmax
                            ///< keeps, then each sequence keeps its top-k by raw logit0 (drifts
                            ///< from KV mode). Not its step-0 logits: the released code feeds the
                            ///< last prompt token twice at step 0.
};

/// What ranks the image tokens at the sparse layer.
enum class vision_rule : std::uint8_t {
  predictor,  ///< Dynamic-LLaVA: the image predictor's logit0 - logit1 on the hidden states
  fastv,      ///< FastV: attention of the last prompt token at layer `sparse_layer - 1`,
              ///< averaged over heads (paper setting: sparse_layer = K = 3, keep 0.25)
};

/// What the drivers prune. `sparse_layer` may equal the model's layer count: no layer runs at or
/// above it, so nothing is pruned and no predictor runs (the drivers then treat `prune_images`
/// and `gate_outputs` as off).
struct sparsifier_options {
  index_t sparse_layer = 2;  ///< METHOD.md: l = 2 (FastV: K = 3)
  vision_rule vision = vision_rule::predictor;
  double vision_keep_ratio = 0.2;  ///< image tokens kept: floor(n * ratio)
  bool prune_images = true;        ///< false: every image token is kept (dense vision)
  bool gate_outputs = true;        ///< false: every output token is kept (dense text)
  output_rule rule = output_rule::per_sequence_argmax;
};

/// What a run kept: for each layer, the query rows it computed and, in KV mode, the tokens held.
struct run_stats {
  std::vector<index_t> rows_per_layer;  ///< [layers] query rows computed, summed over calls
  index_t image_tokens = 0, image_kept = 0;
  index_t output_tokens = 0, output_kept = 0;
};

}  // namespace dynllava
