// SPDX-License-Identifier: Apache-2.0
/// @file keep_margin.hpp
/// @brief The keep margin of a 2-way predictor's logits, shared by host and device code.
#pragma once

#include <dynllava/core/config.hpp>

namespace dynllava {

/// @brief `logit_keep - logit_drop` of a 2-way predictor (channel 0 = keep): the score the image
/// top-k ranks by (METHOD.md 4a) and the gate margin the decision views report.
DYNLLAVA_HOST_DEVICE constexpr float keep_margin(float logit_keep, float logit_drop) noexcept {
  return logit_keep - logit_drop;
}

}  // namespace dynllava
