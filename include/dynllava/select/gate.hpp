// SPDX-License-Identifier: Apache-2.0
/// @file gate.hpp
/// @brief Per-token keep gates: 2-way logits argmax (channel 0 = keep) and score threshold.
///
/// A gate decides each token on its own (no budget). Decisions come out as a mask
/// (`1` = keep) or, through `cpu::mask_to_positions`, as kept positions in CSR. The execution-tag
/// entry points `argmax_gate(host, ...)` / `threshold_gate(host, ...)` write both in one call,
/// with the arguments and semantics of their CUDA twins (`select/cuda/device_gate.cuh`), so
/// generic code calls one name for either backend.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace dynllava {

/// @brief Keep decision of a 2-way predictor: `logit_keep > logit_drop`, strict.
/// Equal logits drop the token; a NaN in either channel drops it.
DYNLLAVA_HOST_DEVICE constexpr bool argmax_keeps(float logit_keep, float logit_drop) noexcept {
  return logit_keep > logit_drop;
}

/// @brief Keep decision of a threshold gate: `score > threshold`, strict. NaN drops.
DYNLLAVA_HOST_DEVICE constexpr bool threshold_keeps(float score, float threshold) noexcept {
  return score > threshold;
}

/// @brief A ragged batch of 2-way logits: token `i` has `values[2 i]` (channel 0, keep) and
/// `values[2 i + 1]` (channel 1, drop), i.e. a row-major `[tokens, 2]` tensor.
template <memory_space Space>
struct ragged_logits {
  span<const index_t, Space> indptr;  ///< [batch + 1] token offsets
  span<const float, Space> values;    ///< [indptr[batch] * 2]

  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept {
    return indptr.size() == 0 ? 0 : indptr.size() - 1;
  }
  DYNLLAVA_HOST_DEVICE constexpr std::size_t tokens() const noexcept { return values.size() / 2; }
};

namespace cpu {

/// @brief Argmax gate over 2-way logits.
/// @param[in] logits ragged `[tokens, 2]` host logits, channel 0 = keep
/// @param[out] keep [tokens] host mask, 1 = keep (`logit0 > logit1`)
/// @throws dynllava::error on an invalid indptr, odd logits size or mask size mismatch.
inline void argmax_gate(ragged_logits<host_space> logits, host_span<std::uint8_t> keep) {
  DYNLLAVA_EXPECTS(logits.values.size() % 2 == 0,
                   "argmax_gate: logits must hold 2 values per token, got {} values",
                   logits.values.size());
  validate_indptr(logits.indptr, logits.tokens(), "argmax_gate: logits.indptr (counts tokens)");
  DYNLLAVA_EXPECTS(keep.size() == logits.tokens(),
                   "argmax_gate: keep must have one entry per token ({}), got {}", logits.tokens(),
                   keep.size());
  for (std::size_t i = 0; i < keep.size(); ++i) {
    keep[i] = argmax_keeps(logits.values[2 * i], logits.values[2 * i + 1]) ? 1 : 0;
  }
}

/// @brief Threshold gate over scores.
/// @param[in] scores ragged host scores, one per token
/// @param[in] threshold a token is kept iff its score is strictly greater
/// @param[out] keep [tokens] host mask, 1 = keep
/// @throws dynllava::error on an invalid indptr, a NaN threshold or a size mismatch.
inline void threshold_gate(host_ragged<const float> scores, float threshold,
                           host_span<std::uint8_t> keep) {
  validate(scores, "threshold_gate: scores");
  DYNLLAVA_EXPECTS(threshold == threshold, "threshold_gate: threshold must not be NaN");
  DYNLLAVA_EXPECTS(keep.size() == scores.values.size(),
                   "threshold_gate: keep must have one entry per token ({}), got {}",
                   scores.values.size(), keep.size());
  for (std::size_t i = 0; i < keep.size(); ++i) {
    keep[i] = threshold_keeps(scores.values[i], threshold) ? 1 : 0;
  }
}

/// @brief Compacts a keep mask into kept positions per sequence (CSR, ascending).
/// @param[in] indptr [batch + 1] host token offsets of the mask
/// @param[in] keep [tokens] host mask; any non-zero byte means keep
/// @param[out] out_indptr [batch + 1] host offsets of the kept positions
/// @param[out] out_positions [>= kept] host; positions local to each sequence, ascending
/// @return total number of kept tokens
/// @throws dynllava::error on an invalid indptr or when `out_positions` is too small.
inline index_t mask_to_positions(host_span<const index_t> indptr,
                                 host_span<const std::uint8_t> keep, host_span<index_t> out_indptr,
                                 host_span<index_t> out_positions) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  DYNLLAVA_EXPECTS(indptr.empty() || static_cast<std::size_t>(indptr[batch]) == keep.size(),
                   "mask_to_positions: keep must have indptr[batch] = {} entries, got {}",
                   indptr.empty() ? 0 : indptr[batch], keep.size());
  validate_indptr(indptr, keep.size(), "mask_to_positions: indptr");
  DYNLLAVA_EXPECTS(out_indptr.size() == batch + 1,
                   "mask_to_positions: out_indptr must have batch + 1 = {} entries, got {}",
                   batch + 1, out_indptr.size());
  const auto kept = static_cast<std::size_t>(
      std::count_if(keep.begin(), keep.end(), [](std::uint8_t k) { return k != 0; }));
  DYNLLAVA_EXPECTS(out_positions.size() >= kept,
                   "mask_to_positions: out_positions must hold at least {} entries (the kept "
                   "tokens), got {}",
                   kept, out_positions.size());
  index_t nnz = 0;
  out_indptr[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    for (index_t i = indptr[b]; i < indptr[b + 1]; ++i) {
      if (keep[static_cast<std::size_t>(i)] == 0) continue;
      out_positions[static_cast<std::size_t>(nnz++)] = i - indptr[b];
    }
    out_indptr[b + 1] = nnz;
  }
  return nnz;
}

}  // namespace cpu

namespace detail {

/// The host gate with the CUDA twin's outputs: `keep_of(i)` decides token `i`; writes `mask`
/// (when not empty) and the kept positions in CSR.
/// @throws dynllava::error naming `who` and the argument on a shape mismatch.
template <class Keep>
void gate_compact(Keep keep_of, host_span<const index_t> indptr, std::size_t tokens,
                  host_span<std::uint8_t> mask, host_span<index_t> out_indptr,
                  host_span<index_t> out_positions, const char* who) {
  const std::size_t batch = indptr.empty() ? 0 : indptr.size() - 1;
  DYNLLAVA_EXPECTS(!indptr.empty() || tokens == 0,
                   "{}: an empty indptr describes an empty batch, but {} tokens were given", who,
                   tokens);
  if (!indptr.empty()) validate_indptr(indptr, tokens, who);
  DYNLLAVA_EXPECTS(mask.empty() || mask.size() == tokens,
                   "{}: mask must be empty or have one entry per token ({}), got {}", who, tokens,
                   mask.size());
  DYNLLAVA_EXPECTS(out_indptr.size() == batch + 1,
                   "{}: out_indptr must have batch + 1 = {} entries, got {}", who, batch + 1,
                   out_indptr.size());
  DYNLLAVA_EXPECTS(out_positions.size() >= tokens,
                   "{}: out_positions must hold one entry per token ({}), got {}", who, tokens,
                   out_positions.size());
  index_t nnz = 0;
  out_indptr[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    for (index_t i = indptr[b]; i < indptr[b + 1]; ++i) {
      const bool keep = keep_of(static_cast<std::size_t>(i));
      if (!mask.empty()) mask[static_cast<std::size_t>(i)] = keep ? 1 : 0;
      if (keep) out_positions[static_cast<std::size_t>(nnz++)] = i - indptr[b];
    }
    out_indptr[b + 1] = nnz;
  }
}

}  // namespace detail

/// @brief Execution-tag entry point of the argmax gate on the host, the twin of
/// `argmax_gate(cuda::on_stream, ...)`: token `i` is kept when `logits[2 i] > logits[2 i + 1]`.
/// @param[in] indptr [batch + 1] host token offsets (empty for an empty batch)
/// @param[in] logits [tokens * 2] host, channel 0 = keep
/// @param[out] mask [tokens] host (1 = keep), or empty to skip it
/// @param[out] out_indptr [batch + 1] host offsets of the kept positions
/// @param[out] out_positions [>= tokens] host kept positions, local to each sequence, ascending
/// @throws dynllava::error naming the argument on a shape mismatch (before anything is written).
inline void argmax_gate(host_t, host_span<const index_t> indptr, host_span<const float> logits,
                        host_span<std::uint8_t> mask, host_span<index_t> out_indptr,
                        host_span<index_t> out_positions) {
  DYNLLAVA_EXPECTS(logits.size() % 2 == 0,
                   "argmax_gate: logits must hold 2 values per token, got {} values",
                   logits.size());
  detail::gate_compact(
      [&](std::size_t i) { return argmax_keeps(logits[2 * i], logits[2 * i + 1]); }, indptr,
      logits.size() / 2, mask, out_indptr, out_positions, "argmax_gate");
}

/// @brief Execution-tag entry point of the threshold gate on the host, the twin of
/// `threshold_gate(cuda::on_stream, ...)`: token `i` is kept when `scores.values[i] > threshold`.
/// Outputs as `argmax_gate(host, ...)`.
/// @throws dynllava::error naming the argument on a shape mismatch or a NaN threshold.
inline void threshold_gate(host_t, host_ragged<const float> scores, float threshold,
                           host_span<std::uint8_t> mask, host_span<index_t> out_indptr,
                           host_span<index_t> out_positions) {
  DYNLLAVA_EXPECTS(threshold == threshold, "threshold_gate: threshold must not be NaN");
  detail::gate_compact([&](std::size_t i) { return threshold_keeps(scores.values[i], threshold); },
                       scores.indptr, scores.values.size(), mask, out_indptr, out_positions,
                       "threshold_gate");
}

}  // namespace dynllava
