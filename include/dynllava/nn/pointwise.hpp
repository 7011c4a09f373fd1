// SPDX-License-Identifier: Apache-2.0
/// @file pointwise.hpp
/// @brief The per-value arithmetic that the host building blocks (nn/activations.hpp,
/// nn/layer_norm.hpp) and their CUDA twins (nn/cuda/kernel_rows.cuh) share: host/device
/// functions, so that the CPU tests exercise the device's formulas.
#pragma once

#include <dynllava/core/config.hpp>

#include <math.h>

namespace dynllava::nn {

/// Exact GELU `0.5 x (1 + erf(x / sqrt 2))` in fp32 (`erff` on host and device).
DYNLLAVA_HOST_DEVICE float gelu_erf(float x) noexcept {
  return 0.5f * x * (1.0f + ::erff(x * 0.70710678118654752440f));
}

/// One LayerNorm output value: `(x - mean) * inv_std * gamma + beta`, fp32, from the row's
/// statistics (`inv_std = 1 / sqrt(var + eps)`).
DYNLLAVA_HOST_DEVICE float layer_norm_value(float x, float mean, float inv_std, float gamma,
                                            float beta) noexcept {
  return (x - mean) * inv_std * gamma + beta;
}

}  // namespace dynllava::nn
