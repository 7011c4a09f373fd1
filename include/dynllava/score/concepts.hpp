// SPDX-License-Identifier: Apache-2.0
/// @file concepts.hpp
/// @brief Scorer concepts: what the selectors rank by.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>

namespace dynllava {

/// @brief A token scorer maps each candidate token's hidden state to a score (larger = keep).
///
/// Requirements, for `const S& s`, hidden states `h` (`host_ragged_rows<const float>`, the
/// candidate tokens of each sequence, `[tokens, H]`) and `out` (`host_span<float>`, `[tokens]`):
///   1. `s.score(host, h, out)` writes one score per row of `h`, in row order;
///   2. a sequence's scores depend only on that sequence's rows (ragged batch == alone), and
///      for seeded random scorers on its index in the batch;
///   3. it is deterministic and does not modify `s`;
///   4. invalid shapes throw `dynllava::error`.
template <class S>
concept token_scorer = requires(const S& s, host_ragged_rows<const float> h, host_span<float> out) {
  s.score(host, h, out);
};

/// @brief A 2-way predictor is a token scorer that also exposes its logits.
///
/// Additional requirements: `s.logits(host, h, out2)` writes `[tokens, 2]` logits, channel 0 =
/// keep, and `score` equals `logit0 - logit1`.
template <class S>
concept two_way_predictor = token_scorer<S> && requires(const S& s, host_ragged_rows<const float> h,
                                                        host_span<float> out) {
  s.logits(host, h, out);
};

/// @brief A stateful scorer accumulates evidence across decode steps (H2O): a `token_scorer`
/// whose scores also depend on what it has seen.
///
/// Additional requirements, for `S& s`:
///   1. `s.append(host, counts)` starts tracking `counts[b]` new tokens at the end of sequence `b`
///      (`host_span<const index_t>`, `[batch]`), each with score 0;
///   2. `s.accumulate(host, probs)` adds attention mass: `probs` is ragged by sequence, each
///      sequence's values a row-major `[rows, tracked_b]` block of attention probabilities
///      (rows = heads x new queries) over its tracked tokens;
///   3. `s.retain(host, kept)` keeps only the tracked tokens at `kept` (CSR, local, ascending);
///   4. `s.scores(host, out)` writes every tracked token's score, sequence by sequence.
template <class S>
concept stateful_token_scorer = token_scorer<S> &&
    requires(S& s, const S& cs, host_span<const index_t> counts, host_ragged<const float> probs,
             host_ragged<const index_t> kept, host_span<float> out) {
      s.append(host, counts);
      s.accumulate(host, probs);
      s.retain(host, kept);
      cs.scores(host, out);
    };

}  // namespace dynllava
