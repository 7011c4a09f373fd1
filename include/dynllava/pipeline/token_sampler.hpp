// SPDX-License-Identifier: Apache-2.0
/// @file token_sampler.hpp
/// @brief `token_sampler`: the next token from a row of logits: greedy, or sampled with a
/// temperature, nucleus (top-p) and a seed, reproducibly on every platform.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace dynllava {

/// How the next token is chosen.
struct sampling_options {
  float temperature = 0.0f;  ///< 0: greedy (argmax, ties to the smaller id); > 0: sample
  float top_p = 1.0f;        ///< sample from the smallest set of most likely tokens whose
                             ///< probability reaches top_p, in (0, 1]
  std::uint64_t seed = 0;    ///< with the sequence index, fixes every draw

  /// @throws dynllava::error naming the field on a negative or non-finite temperature or a top_p
  /// outside (0, 1].
  void validate() const {
    DYNLLAVA_EXPECTS(std::isfinite(temperature) && temperature >= 0.0f,
                     "sampling_options: temperature must be finite and >= 0, got {}", temperature);
    DYNLLAVA_EXPECTS(top_p > 0.0f && top_p <= 1.0f,
                     "sampling_options: top_p must be in (0, 1], got {}", top_p);
  }
};

/// @brief Draws tokens for one sequence. The stream of draws depends only on `seed` and the
/// sequence's index in the batch (splitmix64): the same (seed, index) draws the same numbers
/// whatever the other sequences are (e.g. sequence 0 samples alike alone and in a batch).
class token_sampler {
 public:
  token_sampler(sampling_options o, std::uint64_t sequence)
      : o_(o), state_(o.seed ^ mix(sequence + 1)) {
    o_.validate();
  }

  /// @brief The next token of `logits` (`[vocab]`, host). NaN logits are never chosen; a `+inf`
  /// logit takes all the mass (the first such token, as greedily); a row of only NaN or -inf gives
  /// token 0 greedily and is an error when sampling.
  std::int32_t next(host_span<const float> logits) {
    DYNLLAVA_EXPECTS(!logits.empty(), "token_sampler: logits must not be empty");
    if (o_.temperature == 0.0f) return greedy(logits);
    const std::size_t n = logits.size();
    float max = -INFINITY;
    for (float x : logits) {
      if (!std::isnan(x)) max = std::max(max, x);
    }
    if (max == INFINITY) return greedy(logits);  // an infinite logit takes all the mass
    DYNLLAVA_EXPECTS(std::isfinite(max), "token_sampler: no finite logit to sample from");
    probs_.assign(n, 0.0);
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const float x = logits[i];
      probs_[i] = std::isnan(x) ? 0.0 : std::exp((static_cast<double>(x) - max) / o_.temperature);
      sum += probs_[i];
    }
    order_.resize(n);
    std::iota(order_.begin(), order_.end(), std::int32_t{0});
    std::stable_sort(order_.begin(), order_.end(), [&](std::int32_t a, std::int32_t b) {
      return probs_[static_cast<std::size_t>(a)] > probs_[static_cast<std::size_t>(b)];
    });
    // The nucleus: the shortest prefix whose mass reaches top_p (at least one token).
    std::size_t keep = 0;
    double mass = 0.0;
    while (keep < n && (keep == 0 || mass < o_.top_p * sum))
      mass += probs_[static_cast<std::size_t>(order_[keep++])];
    const double u = uniform() * mass;
    double acc = 0.0;
    for (std::size_t i = 0; i < keep; ++i) {
      acc += probs_[static_cast<std::size_t>(order_[i])];
      if (u < acc) return order_[i];
    }
    return order_[keep - 1];
  }

  /// Argmax of `logits`, ties to the smaller id, NaN never chosen (all NaN: 0).
  static std::int32_t greedy(host_span<const float> logits) {
    std::size_t best = 0;
    bool found = false;
    for (std::size_t i = 0; i < logits.size(); ++i) {
      if (std::isnan(logits[i])) continue;
      if (!found || logits[i] > logits[best]) best = i, found = true;
    }
    return static_cast<std::int32_t>(best);
  }

 private:
  static std::uint64_t mix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) from 53 random bits.
  double uniform() {
    state_ += 0x9e3779b97f4a7c15ull;
    return static_cast<double>(mix(state_) >> 11) * 0x1.0p-53;
  }

  sampling_options o_;
  std::uint64_t state_;
  std::vector<double> probs_;
  std::vector<std::int32_t> order_;
};

/// @brief Greedy tokens of `[rows, vocab]` logits (`token_sampler::greedy` per row: ties to the
/// smaller id, NaN never chosen). @throws dynllava::error unless `logits` holds whole rows.
inline std::vector<std::int32_t> greedy_tokens(host_span<const float> logits, index_t vocab) {
  DYNLLAVA_EXPECTS(vocab > 0 && logits.size() % static_cast<std::size_t>(vocab) == 0,
                   "greedy_tokens: logits ({} values) must be whole rows of vocab = {}",
                   logits.size(), vocab);
  const auto V = static_cast<std::size_t>(vocab);
  std::vector<std::int32_t> out(logits.size() / V);
  for (std::size_t r = 0; r < out.size(); ++r) {
    out[r] = token_sampler::greedy(host_span<const float>(logits.data() + r * V, V));
  }
  return out;
}
/// `greedy_tokens` of a logits vector (what the drivers return).
inline std::vector<std::int32_t> greedy_tokens(const std::vector<float>& logits, index_t vocab) {
  return greedy_tokens(host_span<const float>(logits.data(), logits.size()), vocab);
}

}  // namespace dynllava
