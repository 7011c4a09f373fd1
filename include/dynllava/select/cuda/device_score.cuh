// SPDX-License-Identifier: Apache-2.0
/// @file device_score.cuh
/// @brief `device_score`: the score and logit types the CUDA selections read (fp32, fp16, bf16),
/// and their exact widening to fp32, by which they are ranked and gated.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <concepts>

namespace dynllava::cuda {

/// @brief A score type the CUDA selections and gates read.
/// Requirements: `T` is `float`, `__half` or `__nv_bfloat16`; it is ranked and compared by its
/// exact fp32 value (`detail::widen`), so the CPU twin, given the widened scores, decides the same.
template <class T>
concept device_score =
    std::same_as<T, float> || std::same_as<T, __half> || std::same_as<T, __nv_bfloat16>;

namespace detail {

/// Exact widening of a stored score to fp32.
__device__ inline float widen(float s) { return s; }
__device__ inline float widen(__half s) { return __half2float(s); }
__device__ inline float widen(__nv_bfloat16 s) { return __bfloat162float(s); }

}  // namespace detail
}  // namespace dynllava::cuda
