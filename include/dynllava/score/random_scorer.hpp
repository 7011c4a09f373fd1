// SPDX-License-Identifier: Apache-2.0
/// @file random_scorer.hpp
/// @brief Training-free baseline: seeded random scores (the paper's "random dropping").
///
/// The score of row `i` of sequence `b` is a uniform float in [0, 1) from a counter-based hash
/// of `(seed, b, i)`: reproducible, independent of threads and launch shapes, identical on the
/// host and the device (`random_score` is host/device).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/score/concepts.hpp>

#include <cstdint>

namespace dynllava {

/// SplitMix64 finaliser: a bijective 64-bit mix.
DYNLLAVA_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Uniform score in [0, 1) (24 random bits) for row `row` of sequence `sequence`.
DYNLLAVA_HOST_DEVICE constexpr float random_score(std::uint64_t seed, std::uint64_t sequence,
                                                  std::uint64_t row) noexcept {
  const std::uint64_t h = mix64(mix64(seed ^ mix64(sequence)) ^ row);
  return static_cast<float>(h >> 40) * 0x1.0p-24f;
}

struct random_scorer {
  std::uint64_t seed = 0;

  /// @param[in] hidden ragged host rows (only the shape is used)
  /// @param[out] scores [tokens] host
  void score(host_t, host_ragged_rows<const float> hidden, host_span<float> scores) const {
    validate(hidden, "random_scorer: hidden");
    DYNLLAVA_EXPECTS(scores.size() == hidden.rows(),
                     "random_scorer: scores must have one entry per token ({}), got {}",
                     hidden.rows(), scores.size());
    for (std::size_t b = 0; b < hidden.batch(); ++b) {
      for (index_t i = 0; i < hidden.length(b); ++i) {
        scores[static_cast<std::size_t>(hidden.indptr[b] + i)] =
            random_score(seed, b, static_cast<std::uint64_t>(i));
      }
    }
  }
};
static_assert(token_scorer<random_scorer, host_t>);

}  // namespace dynllava
