// SPDX-License-Identifier: Apache-2.0
/// @file ranking_key.hpp
/// @brief The 64-bit ranking key of a candidate: score descending, ties by position, NaN lowest.
///
/// `topk_sort_key(score, position, tie)` packs `score_key(score)` (core/tie_break.hpp) into the
/// high word and the position into the low word, so that larger keys rank first exactly as
/// `ranks_before` orders candidates. Within one sequence positions are distinct, hence so are
/// keys. Shared verbatim by the CPU and CUDA backends and by retention policies.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/tie_break.hpp>

#include <cstdint>

namespace dynllava {

/// @brief Packs a candidate into one 64-bit sort key: sorting keys in descending order ranks
/// candidates exactly as `ranks_before` does. Shared by the CPU and CUDA backends.
/// @pre `position >= 0`.
DYNLLAVA_HOST_DEVICE constexpr std::uint64_t topk_sort_key(float score, index_t position,
                                                           tie_break tie) noexcept {
  const auto pos = static_cast<std::uint32_t>(position);
  const std::uint32_t low = tie == tie_break::smaller_position ? ~pos : pos;
  return (static_cast<std::uint64_t>(score_key(score)) << 32) | low;
}

/// @brief The position packed into a key by `topk_sort_key` with the same `tie`.
DYNLLAVA_HOST_DEVICE constexpr index_t topk_key_position(std::uint64_t key,
                                                         tie_break tie) noexcept {
  const auto low = static_cast<std::uint32_t>(key);
  return static_cast<index_t>(tie == tie_break::smaller_position ? ~low : low);
}

}  // namespace dynllava
