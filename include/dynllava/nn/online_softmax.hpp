// SPDX-License-Identifier: Apache-2.0
/// @file online_softmax.hpp
/// @brief The one-pass softmax-weighted sum over a row of logits (online softmax): the
/// arithmetic of the CUDA image-predictor attention kernel (score/cuda/), a host/device function
/// so that the CPU tests check it against the two-pass softmax of `nn::attention`.
///
/// For logits `x_0 .. x_{n-1}` and values `v_j`, `sum_j softmax(x)_j v_j` is accumulated key by
/// key: `add(x_j)` returns the factor that rescales what was accumulated so far (`exp(m_old -
/// m_new)`) and the weight of `v_j` (`exp(x_j - m_new)`), with `m` the running maximum; the sum is
/// then divided by `sum()`. fp32, `expf` on host and device.
#pragma once

#include <dynllava/core/config.hpp>

#include <math.h>

namespace dynllava::nn {

/// One step of `online_softmax::add`: multiply the accumulated sum by `rescale`, then add
/// `weight * v_j`.
struct online_softmax_step {
  float rescale = 1.0f;
  float weight = 0.0f;
};

/// @brief Running maximum and exponential sum of a row's logits. A `-inf` logit gets weight 0; a
/// row of only `-inf` logits ends with `sum() == 0` (its weighted sum is 0 / 0, NaN, as torch's
/// softmax gives); NaN logits are unspecified.
struct online_softmax {
  float max = -INFINITY;  ///< of the logits added so far
  float total = 0.0f;     ///< sum of `exp(x - max)` over them

  DYNLLAVA_HOST_DEVICE online_softmax_step add(float logit) noexcept {
    const float m = logit > max ? logit : max;
    if (m == -INFINITY) return {1.0f, 0.0f};  // nothing but -inf so far
    const float rescale = ::expf(max - m);    // exp(-inf) = 0 for the first finite logit
    const float weight = ::expf(logit - m);
    total = total * rescale + weight;
    max = m;
    return {rescale, weight};
  }

  /// The softmax denominator: divide the accumulated weighted sum by it.
  DYNLLAVA_HOST_DEVICE float sum() const noexcept { return total; }
};

}  // namespace dynllava::nn
