// SPDX-License-Identifier: Apache-2.0
/// @file tie_break.hpp
/// @brief The one ranking rule of dynllava: score descending, ties by position, NaN lowest.
///
/// Every selection (CPU and CUDA) ranks through `score_key`, a monotone map of a float score to
/// an unsigned key, so both backends order the same inputs identically, bit for bit:
///   1. larger scores rank first; `+inf` is the largest, `-inf` the smallest non-NaN score;
///   2. every NaN (any sign or payload) ranks below `-inf`, and all NaNs tie;
///   3. `-0.0` and `+0.0` tie;
///   4. ties are broken by position according to `tie_break` (smaller position first by default).
#pragma once

#include <dynllava/core/config.hpp>

#include <bit>
#include <cstdint>
#include <ostream>
#include <string_view>

namespace dynllava {

/// How equal scores are ordered.
enum class tie_break : std::uint8_t {
  smaller_position,  ///< the earlier token wins a tie (default; what the checkpoints assume)
  larger_position,   ///< the later token wins a tie
};

constexpr std::string_view to_string(tie_break t) noexcept {
  return t == tie_break::smaller_position ? "smaller_position" : "larger_position";
}
inline std::ostream& operator<<(std::ostream& os, tie_break t) { return os << to_string(t); }

/// @brief Order-preserving key of a score: `a` ranks above `b` iff `score_key(a) > score_key(b)`,
/// with every NaN mapped to 0 (the lowest key) and both zeros to the same key.
/// Works on the bits only (no float comparison), so flush-to-zero or denormals-are-zero modes
/// cannot change a key, and loops over it vectorize.
DYNLLAVA_HOST_DEVICE constexpr std::uint32_t score_key(float s) noexcept {
#if defined(__CUDA_ARCH__)
  std::uint32_t bits = __float_as_uint(s);
#else
  std::uint32_t bits = std::bit_cast<std::uint32_t>(s);
#endif
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  bits = magnitude == 0u ? 0u : bits;  // fold -0.0 onto +0.0
  // Negative: flip every bit; non-negative: set the sign bit.
  const std::uint32_t key = bits ^ (static_cast<std::uint32_t>(-(bits >> 31)) | 0x80000000u);
  return magnitude > 0x7f800000u ? 0u : key;  // NaN (any sign or payload) -> 0
}

/// @brief Strict weak (in fact total, for distinct positions) order of candidates.
/// @return true when the candidate (`key_a`, `pos_a`) ranks before (`key_b`, `pos_b`).
DYNLLAVA_HOST_DEVICE constexpr bool ranks_before(
    std::uint32_t key_a, index_t pos_a, std::uint32_t key_b, index_t pos_b,
    tie_break tie = tie_break::smaller_position) noexcept {
  if (key_a != key_b) return key_a > key_b;
  return tie == tie_break::smaller_position ? pos_a < pos_b : pos_a > pos_b;
}

}  // namespace dynllava
