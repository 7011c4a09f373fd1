// SPDX-License-Identifier: Apache-2.0
/// @file device_gate.cuh
/// @brief The argmax and threshold gates on CUDA, fused with the ordered compaction: one launch
/// decides every token and writes the keep mask (optional) and the kept positions in CSR form.
/// Device-level calls return `cudaError_t`, never throw, never allocate, never synchronise; the
/// `on_stream` entry points throw on invalid arguments.
///
/// Semantics equal the CPU twins (`cpu::argmax_gate` / `cpu::threshold_gate` followed by
/// `cpu::mask_to_positions`, select/gate.hpp) on the fp32-widened inputs. One block runs the
/// whole batch: the gate of a decode step sees one token (or a few) per sequence, so the batch is
/// a few hundred tokens; longer inputs stay correct and run at one SM's speed.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/select/cuda/device_score.cuh>
#include <dynllava/select/cuda/kernel_gate.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>

namespace dynllava::cuda {

namespace detail {

/// Why a gate call's shapes are invalid (host-side checks only), or null.
inline const char* gate_argument_error(std::size_t batch, std::size_t tokens, std::size_t mask_size,
                                       std::size_t out_indptr_size,
                                       std::size_t out_positions_size) {
  if (tokens > static_cast<std::size_t>(std::numeric_limits<index_t>::max() - gate_threads)) {
    return "more than 2^31 - 1 - 512 tokens";
  }
  if (mask_size != 0 && mask_size != tokens)
    return "mask must be empty or have one entry per token";
  if (out_indptr_size != batch + 1) return "out_indptr must have batch + 1 entries";
  if (out_positions_size < tokens) return "out_positions must hold one entry per token";
  return nullptr;
}

template <class Keep>
cudaError_t launch_gate(Keep keep_of, device_span<const index_t> indptr, std::size_t tokens,
                        device_span<std::uint8_t> mask, device_span<index_t> out_indptr,
                        device_span<index_t> out_positions, int* d_invalid, cudaStream_t stream) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  if (gate_argument_error(batch, tokens, mask.size(), out_indptr.size(), out_positions.size()) !=
      nullptr) {
    return cudaErrorInvalidValue;
  }
  if (indptr.empty()) {  // an empty batch without offsets: no token to decide
    if (tokens != 0) return cudaErrorInvalidValue;
    return cudaMemsetAsync(out_indptr.data(), 0, sizeof(index_t), stream);
  }
  gate_compact_kernel<gate_threads><<<1, gate_threads, 0, stream>>>(
      keep_of, indptr.data(), batch, static_cast<index_t>(tokens),
      mask.empty() ? nullptr : mask.data(), out_indptr.data(), out_positions.data(), d_invalid);
  return cudaPeekAtLastError();
}

}  // namespace detail

/// @brief Device-level argmax gate: token `i` is kept when `logits[2 i] > logits[2 i + 1]`.
/// @param[in] indptr [batch + 1] device token offsets (checked on the device)
/// @param[in] logits [tokens * 2] device, channel 0 = keep
/// @param[out] mask [tokens] device (1 = keep), or empty to skip it
/// @param[out] out_indptr [batch + 1] device offsets of the kept positions
/// @param[out] out_positions [>= tokens] device kept positions, local to each sequence, ascending
/// @param[out] d_invalid device int or null: set to 1 on an invalid `indptr` (then `out_indptr`
///             is all zeros and nothing else is written)
/// @return `cudaErrorInvalidValue` on a shape mismatch (nothing launched), else the launch status
template <class T>
requires device_score<T> cudaError_t argmax_gate(device_span<const index_t> indptr,
                                                 device_span<const T> logits,
                                                 device_span<std::uint8_t> mask,
                                                 device_span<index_t> out_indptr,
                                                 device_span<index_t> out_positions, int* d_invalid,
                                                 cudaStream_t stream) {
  if (logits.size() % 2 != 0) return cudaErrorInvalidValue;
  return detail::launch_gate(detail::argmax_keep_rule<T>{logits.data()}, indptr, logits.size() / 2,
                             mask, out_indptr, out_positions, d_invalid, stream);
}

/// @brief Device-level threshold gate: token `i` is kept when `scores.values[i] > threshold`.
/// Arguments as `argmax_gate`, with `scores` ragged over tokens; `threshold` must not be NaN.
template <class T>
requires device_score<T> cudaError_t threshold_gate(device_ragged<const T> scores, float threshold,
                                                    device_span<std::uint8_t> mask,
                                                    device_span<index_t> out_indptr,
                                                    device_span<index_t> out_positions,
                                                    int* d_invalid, cudaStream_t stream) {
  if (threshold != threshold) return cudaErrorInvalidValue;
  return detail::launch_gate(detail::threshold_keep_rule<T>{scores.values.data(), threshold},
                             scores.indptr, scores.values.size(), mask, out_indptr, out_positions,
                             d_invalid, stream);
}

}  // namespace dynllava::cuda

namespace dynllava {

/// Execution-tag entry point of the argmax gate on a CUDA stream. @see cuda::argmax_gate
/// @throws dynllava::error naming the argument on a shape mismatch, dynllava::cuda_error on a
///         launch failure.
template <class T>
requires cuda::device_score<T>
void argmax_gate(cuda::on_stream exec, device_span<const index_t> indptr,
                 device_span<const T> logits, device_span<std::uint8_t> mask,
                 device_span<index_t> out_indptr, device_span<index_t> out_positions,
                 int* d_invalid = nullptr) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  DYNLLAVA_EXPECTS(logits.size() % 2 == 0,
                   "argmax_gate (CUDA): logits must hold 2 values per token, got {} values",
                   logits.size());
  const char* why = cuda::detail::gate_argument_error(batch, logits.size() / 2, mask.size(),
                                                      out_indptr.size(), out_positions.size());
  DYNLLAVA_EXPECTS(why == nullptr,
                   "argmax_gate (CUDA): {} (batch {}, tokens {}, mask {}, out_indptr {}, "
                   "out_positions {})",
                   why == nullptr ? "" : why, batch, logits.size() / 2, mask.size(),
                   out_indptr.size(), out_positions.size());
  DYNLLAVA_EXPECTS(!indptr.empty() || logits.empty(),
                   "argmax_gate (CUDA): an empty indptr describes an empty batch, but {} tokens "
                   "were given",
                   logits.size() / 2);
  DYNLLAVA_CUDA_TRY(
      cuda::argmax_gate(indptr, logits, mask, out_indptr, out_positions, d_invalid, exec.stream));
}

/// Execution-tag entry point of the threshold gate on a CUDA stream. @see cuda::threshold_gate
/// @throws dynllava::error naming the argument on a shape mismatch or a NaN threshold,
///         dynllava::cuda_error on a launch failure.
template <class T>
requires cuda::device_score<T>
void threshold_gate(cuda::on_stream exec, device_ragged<const T> scores, float threshold,
                    device_span<std::uint8_t> mask, device_span<index_t> out_indptr,
                    device_span<index_t> out_positions, int* d_invalid = nullptr) {
  DYNLLAVA_EXPECTS(threshold == threshold, "threshold_gate (CUDA): threshold must not be NaN");
  const char* why = cuda::detail::gate_argument_error(
      scores.batch(), scores.values.size(), mask.size(), out_indptr.size(), out_positions.size());
  DYNLLAVA_EXPECTS(why == nullptr,
                   "threshold_gate (CUDA): {} (batch {}, tokens {}, mask {}, out_indptr {}, "
                   "out_positions {})",
                   why == nullptr ? "" : why, scores.batch(), scores.values.size(), mask.size(),
                   out_indptr.size(), out_positions.size());
  DYNLLAVA_EXPECTS(!scores.indptr.empty() || scores.values.empty(),
                   "threshold_gate (CUDA): an empty indptr describes an empty batch, but {} tokens "
                   "were given",
                   scores.values.size());
  DYNLLAVA_CUDA_TRY(cuda::threshold_gate(scores, threshold, mask, out_indptr, out_positions,
                                         d_invalid, exec.stream));
}

}  // namespace dynllava
