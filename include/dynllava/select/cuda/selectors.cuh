// SPDX-License-Identifier: Apache-2.0
/// @file selectors.cuh
/// @brief The CUDA models of `token_selector` (select/concepts.hpp), twins of the host models
/// `budgeted_topk`, `score_threshold` and `logit_argmax`: same rules, inputs in device memory, on
/// a stream. They allocate nothing and never synchronise (the top-k runs in a workspace the
/// caller provides), so a decode step that selects through them can be captured in a CUDA graph.
/// `select` returns `kept_count_on_device`: the kept total is `indptr[batch]` on the device.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/cuda/device_gate.cuh>
#include <dynllava/select/cuda/device_topk.cuh>
#include <dynllava/select/topk_types.hpp>

#include <cstddef>
#include <cstdint>

namespace dynllava::cuda {

/// @brief Keeps each sequence's `k_b` best-scoring tokens, on the device (`cuda::topk`).
/// Non-owning: `temp` is a device workspace of `temp_bytes` bytes, at least
/// `workspace_bytes(batch)` for the batches it will see.
struct budgeted_topk {
  topk_budget<device_space> budget = topk_budget<device_space>::keep_ratio(1.0);
  topk_options options{};
  index_t max_length = 0;      ///< host-known bound of every sequence's length
  void* temp = nullptr;        ///< device workspace
  std::size_t temp_bytes = 0;  ///< its size
  int* d_invalid = nullptr;    ///< device flag raised on an input found invalid on the device

  /// Workspace bytes a batch of `batch` sequences needs.
  /// @throws dynllava::error when the budget or `max_length` is invalid
  std::size_t workspace_bytes(std::size_t batch) const {
    std::size_t bytes = 0;
    DYNLLAVA_EXPECTS(max_length >= 0 && max_length <= dynllava::detail::topk_row_max,
                     "cuda::budgeted_topk: max_length must be in [0, {}], got {}",
                     dynllava::detail::topk_row_max, max_length);
    // Shapes only matter for the size: a fake batch of the right extents, never dereferenced.
    const device_ragged<const float> shape{device_span<const index_t>(nullptr, batch + 1),
                                           device_span<const float>(nullptr, 0)};
    DYNLLAVA_CUDA_TRY(cuda::topk(nullptr, bytes, shape, max_length, budget,
                                 device_span<index_t>(nullptr, batch + 1),
                                 device_span<index_t>(nullptr, 0), options, nullptr, nullptr));
    return bytes;
  }

  template <class T>
  requires device_score<T> index_t select(on_stream exec, device_ragged<const T> scores,
                                          device_span<index_t> indptr,
                                          device_span<index_t> positions)
  const {
    DYNLLAVA_EXPECTS(temp != nullptr,
                     "cuda::budgeted_topk: no workspace (size it with workspace_bytes)");
    if (const char* why =
            detail::topk_argument_error(scores, max_length, budget, indptr, positions);
        why != nullptr) {
      DYNLLAVA_FAIL("cuda::budgeted_topk: {} (batch {}, tokens {}, max_length {})", why,
                    scores.batch(), scores.values.size(), max_length);
    }
    const std::size_t needed = workspace_bytes(scores.batch());
    DYNLLAVA_EXPECTS(temp_bytes >= needed,
                     "cuda::budgeted_topk: the workspace must hold {} bytes for batch {}, got {}",
                     needed, scores.batch(), temp_bytes);
    std::size_t bytes = temp_bytes;
    const cudaError_t status = cuda::topk(temp, bytes, scores, max_length, budget, indptr,
                                          positions, options, d_invalid, exec.stream);
    DYNLLAVA_CUDA_TRY(status);
    return kept_count_on_device;
  }
};

/// Keeps tokens whose score is strictly above `threshold`, on the device (`cuda::threshold_gate`).
struct score_threshold {
  float threshold = 0.0f;
  int* d_invalid = nullptr;  ///< device flag raised on an invalid `indptr`

  template <class T>
  requires device_score<T> index_t select(on_stream exec, device_ragged<const T> scores,
                                          device_span<index_t> indptr,
                                          device_span<index_t> positions)
  const {
    dynllava::threshold_gate(exec, scores, threshold, device_span<std::uint8_t>{}, indptr,
                             positions, d_invalid);
    return kept_count_on_device;
  }
};

/// Keeps tokens whose 2-way logits say keep, `logit0 > logit1`, on the device
/// (`cuda::argmax_gate`).
struct logit_argmax {
  int* d_invalid = nullptr;  ///< device flag raised on an invalid `indptr`

  index_t select(on_stream exec, ragged_logits<device_space> logits, device_span<index_t> indptr,
                 device_span<index_t> positions) const {
    dynllava::argmax_gate(exec, logits.indptr, logits.values, device_span<std::uint8_t>{}, indptr,
                          positions, d_invalid);
    return kept_count_on_device;
  }
};

static_assert(token_selector<budgeted_topk, on_stream, device_ragged<const float>>);
static_assert(token_selector<budgeted_topk, on_stream, device_ragged<const __half>>);
static_assert(token_selector<score_threshold, on_stream, device_ragged<const float>>);
static_assert(token_selector<score_threshold, on_stream, device_ragged<const __nv_bfloat16>>);
static_assert(token_selector<logit_argmax, on_stream, ragged_logits<device_space>>);
static_assert(!token_selector<logit_argmax, on_stream, device_ragged<const float>>);
static_assert(!token_selector<budgeted_topk, host_t, host_ragged<const float>>);

}  // namespace dynllava::cuda
