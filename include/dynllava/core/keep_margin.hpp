// SPDX-License-Identifier: Apache-2.0
/// @file keep_margin.hpp
/// @brief The keep margin of a 2-way predictor's logits, shared by host and device code, and
/// its host execution-tag entry point over a batch.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>

namespace dynllava {

/// @brief `logit_keep - logit_drop` of a 2-way predictor (channel 0 = keep): the score the image
/// top-k ranks by (METHOD.md 4a) and the gate margin the decision views report.
DYNLLAVA_HOST_DEVICE constexpr float keep_margin(float logit_keep, float logit_drop) noexcept {
  return logit_keep - logit_drop;
}

/// @brief `scores[i] = keep_margin(logits[2 i], logits[2 i + 1])` on the host, the twin of
/// `keep_margins(cuda::on_stream, ...)` (score/cuda/device_margins.cuh).
/// @throws dynllava::error unless `logits` holds 2 values per score.
inline void keep_margins(host_t, host_span<const float> logits, host_span<float> scores) {
  DYNLLAVA_EXPECTS(logits.size() == 2 * scores.size(),
                   "keep_margins: logits must hold 2 values per score ({}), got {}",
                   2 * scores.size(), logits.size());
  for (std::size_t i = 0; i < scores.size(); ++i) {
    scores[i] = keep_margin(logits[2 * i], logits[2 * i + 1]);
  }
}

}  // namespace dynllava
