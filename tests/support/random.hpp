// SPDX-License-Identifier: Apache-2.0
/// @file random.hpp
/// @brief Seeded generators of ragged batches and adversarial scores for property tests.
#pragma once

#include <dynllava/core/config.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace dynllava::test {

/// Deterministic generator; every test seeds its own.
using rng = std::mt19937_64;

/// Random sequence lengths in [0, max_len], with some forced empties and single tokens.
inline std::vector<index_t> random_lengths(rng& g, std::size_t batch, index_t max_len) {
  std::uniform_int_distribution<index_t> len(0, max_len);
  std::uniform_int_distribution<int> special(0, 9);
  std::vector<index_t> out(batch);
  for (auto& l : out) {
    const int s = special(g);
    l = s == 0 ? 0 : s == 1 ? 1 : len(g);
  }
  return out;
}

/// `n` values drawn from the standard normal distribution (hidden states, weights).
inline std::vector<float> normal_values(rng& g, std::size_t n) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> out(n);
  for (auto& v : out) v = d(g);
  return out;
}

inline std::vector<index_t> indptr_of(const std::vector<index_t>& lengths) {
  std::vector<index_t> indptr(lengths.size() + 1, 0);
  for (std::size_t b = 0; b < lengths.size(); ++b) indptr[b + 1] = indptr[b] + lengths[b];
  return indptr;
}

/// Kinds of score distributions used by property tests.
enum class score_mix {
  distinct,     ///< continuous normal scores (ties essentially impossible)
  heavy_ties,   ///< few distinct values
  adversarial,  ///< ties, NaN (both signs), +-inf, +-0, denormals, same leading bits
};

inline std::vector<float> random_scores(rng& g, std::size_t n, score_mix mix) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> pick(0, 11);
  std::vector<float> out(n);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (auto& s : out) {
    switch (mix) {
      case score_mix::distinct:
        s = normal(g);
        break;
      case score_mix::heavy_ties:
        s = static_cast<float>(pick(g) % 4) - 1.5f;
        break;
      case score_mix::adversarial:
        switch (pick(g)) {
          case 0:
            s = nan;
            break;
          case 1:
            s = -nan;
            break;
          case 2:
            s = inf;
            break;
          case 3:
            s = -inf;
            break;
          case 4:
            s = 0.0f;
            break;
          case 5:
            s = -0.0f;
            break;
          case 6:
            s = std::numeric_limits<float>::denorm_min();
            break;
          case 7:
            s = 1.0f;
            break;
          case 8:
            s = std::nextafter(1.0f, 2.0f);
            break;
          case 9:
            s = -std::numeric_limits<float>::max();
            break;
          default:
            s = normal(g);
            break;
        }
        break;
    }
  }
  return out;
}

}  // namespace dynllava::test
