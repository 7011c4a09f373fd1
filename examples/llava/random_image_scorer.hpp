// SPDX-License-Identifier: Apache-2.0
/// @file random_image_scorer.hpp
/// @brief The "random dropping" image predictor of the evaluation: the library's seeded
/// `random_scorer` dressed as a `two_way_predictor`, so that `kv_session` keeps the top
/// `vision_keep_rate` of the image rows by random scores exactly where Dynamic-LLaVA's image
/// predictor would decide (same sparse layer, same budget, same pipeline).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/random_scorer.hpp>

#include <cstdint>
#include <vector>

namespace dynllava::llava {

/// Logits `[score, 0]` per row, `score` uniform in [0, 1) from `(seed, sequence, row)`; the
/// hidden states are read for their shape only. `width` is the model's hidden width (the
/// drivers check it as they check a trained predictor's).
struct random_image_scorer {
  random_scorer scorer;
  index_t width = 0;

  [[nodiscard]] index_t hidden() const noexcept { return width; }

  /// @param[out] scores [tokens] host
  void score(host_t tag, host_ragged_rows<const float> h, host_span<float> scores) const {
    scorer.score(tag, h, scores);
  }

  /// @param[out] logits [tokens, 2] host, channel 0 = keep
  void logits(host_t tag, host_ragged_rows<const float> h, host_span<float> logits) const {
    DYNLLAVA_EXPECTS(logits.size() == 2 * h.rows(),
                     "random_image_scorer: logits must have 2 entries per token ({}), got {}",
                     2 * h.rows(), logits.size());
    std::vector<float> s(h.rows());
    scorer.score(tag, h, make_host_span(s));
    for (std::size_t i = 0; i < s.size(); ++i) {
      logits[2 * i] = s[i];
      logits[2 * i + 1] = 0.0f;
    }
  }
};
static_assert(two_way_predictor<random_image_scorer, host_t>);

}  // namespace dynllava::llava
