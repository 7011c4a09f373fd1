// SPDX-License-Identifier: Apache-2.0
/// @file device_margins.cuh
/// @brief `keep_margins(cuda::on_stream, ...)`: the keep margins `logit0 - logit1` of a batch of
/// 2-way logits on a stream, the twin of `keep_margins(host, ...)` (core/keep_margin.hpp); one
/// elementwise launch, nothing allocated, no host synchronisation.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/nn/cuda/device_linear.cuh>
#include <dynllava/nn/cuda/kernel_rows.cuh>

#include <cstddef>

namespace dynllava {

/// @brief `scores[i] = keep_margin(logits[2 i], logits[2 i + 1])`, enqueued on `exec.stream`.
/// @param[in] logits [n, 2] device; @param[out] scores [n] device
/// @throws dynllava::error unless `logits` holds 2 values per score, dynllava::cuda_error on a
///         launch failure.
inline void keep_margins(cuda::on_stream exec, device_span<const float> logits,
                         device_span<float> scores) {
  DYNLLAVA_EXPECTS(logits.size() == 2 * scores.size(),
                   "keep_margins (CUDA): logits must hold 2 values per score ({}), got {}",
                   2 * scores.size(), logits.size());
  if (scores.empty()) return;
  cuda::detail::
      margin_kernel<<<cuda::detail::elementwise_grid(scores.size()), 256, 0, exec.stream>>>(
          logits.data(), scores.size(), scores.data());
  DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
}

}  // namespace dynllava
