// SPDX-License-Identifier: Apache-2.0
/// @file concepts.hpp
/// @brief Scorer concepts: what the selectors rank by. Each takes the execution tag `Tag`, whose
/// memory space (`execution_space_t<Tag>`) every view in the requirements lives in, so one concept
/// describes the host and the CUDA model of the same scorer.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <concepts>
#include <cstddef>

namespace dynllava {

/// @brief A token scorer maps each candidate token's hidden state to a score (larger = keep).
///
/// Requirements, for `const S& s`, a tag `tag` of type `Tag`, hidden states `h`
/// (`ragged_rows_for<Tag, const float>`, the candidate tokens of each sequence, `[tokens, H]`)
/// and `out` (`span_for<Tag, float>`, `[tokens]`):
///   1. `s.score(tag, h, out)` writes one score per row of `h`, in row order;
///   2. a sequence's scores depend only on that sequence's rows (ragged batch == alone), and
///      for seeded random scorers on its index in the batch;
///   3. it is deterministic and does not modify `s`;
///   4. invalid shapes throw `dynllava::error` (host tag) before anything is written.
///
/// A scorer that reads one width only says so with `s.hidden()` (as `two_way_predictor`
/// requires); the drivers then check it against the model's width before anything runs (one
/// without it, such as `l2_norm_scorer`, takes rows of any width).
template <class S, class Tag>
concept token_scorer = execution_tag<Tag> &&
    requires(const S& s, Tag tag, ragged_rows_for<Tag, const float> h, span_for<Tag, float> out) {
  s.score(tag, h, out);
};

/// @brief A 2-way predictor (the Dynamic-LLaVA image and output predictors): a token scorer that
/// also exposes its logits and the width it reads.
///
/// Requirements, in addition to `token_scorer<S, Tag>`, for `out2` (`span_for<Tag, float>`,
/// `[tokens, 2]`):
///   1. `s.logits(tag, h, out2)` writes `[tokens, 2]` logits, channel 0 = keep;
///   2. `score` equals `logit0 - logit1` (the margin) for every token;
///   3. `s.hidden()` is the width H of the rows it reads (checked against the model's width by
///      the drivers before anything runs).
template <class S, class Tag>
concept two_way_predictor = token_scorer<S, Tag> &&
    requires(const S& s, Tag tag, ragged_rows_for<Tag, const float> h, span_for<Tag, float> out) {
  s.logits(tag, h, out);
  { s.hidden() } -> std::convertible_to<index_t>;
};

/// @brief A stateful scorer accumulates evidence across decode steps (H2O): a `token_scorer`
/// whose scores also depend on what it has seen.
///
/// Requirements, for `S& s` and `const S& cs`:
///   1. `S(batch)` constructs a scorer for `batch` sequences tracking nothing;
///   2. `cs.lengths()` (convertible to `span_for<Tag, const index_t>`, `[batch]`) holds the number
///      of tokens tracked per sequence, in the tag's memory space (a device model keeps them on
///      the device, so nothing here needs a host read); it stays valid while `s` lives and
///      reflects every call enqueued before the read;
///   3. `s.append(tag, counts)` starts tracking `counts[b]` new tokens at the end of sequence `b`
///      (`span_for<Tag, const index_t>`, `[batch]`), each with score 0;
///   4. `s.accumulate(tag, probs)` adds attention mass: `probs` (`ragged_for<Tag, const float>`)
///      is ragged by sequence, each sequence's values a row-major `[rows, lengths()[b]]` block of
///      attention probabilities (rows = heads x new queries) over its tracked tokens;
///   5. `s.retain(tag, kept)` keeps only the tracked tokens at `kept` (CSR, local, ascending);
///   6. `cs.scores(tag, out)` writes every tracked token's score, sequence by sequence.
template <class S, class Tag>
concept stateful_token_scorer = token_scorer<S, Tag> && std::constructible_from<S, std::size_t> &&
    requires(S& s, const S& cs, Tag tag, span_for<Tag, const index_t> counts,
             ragged_for<Tag, const float> probs, ragged_for<Tag, const index_t> kept,
             span_for<Tag, float> out) {
  { cs.lengths() } -> std::convertible_to<span_for<Tag, const index_t>>;
  s.append(tag, counts);
  s.accumulate(tag, probs);
  s.retain(tag, kept);
  cs.scores(tag, out);
};

/// @brief An attention-based scorer (FastV): ranks candidates by a layer's queries and keys, not
/// by hidden states.
///
/// Requirements, for `const S& s`, `queries` (`span_for<Tag, const float>`, `[batch, width]`, the
/// last row of each sequence, RoPE applied), `keys` (`ragged_rows_for<Tag, const float>`,
/// `[context, width]` per sequence), `candidates` (`ragged_for<Tag, const index_t>`, context rows
/// to score, local to each sequence) and `out` (`span_for<Tag, float>`, `[candidates]`):
///   1. `s.score(tag, queries, keys, candidates, out)` writes one score per candidate;
///   2. it is deterministic and does not modify `s`; a sequence's scores depend only on it;
///   3. invalid shapes throw `dynllava::error` (host tag).
///
/// A scorer that reads one width only says so with `s.width()` (the bundled FastV scorers:
/// `heads * head_dim`); the drivers then check it against the model's width before anything
/// runs.
template <class S, class Tag>
concept attention_scorer = execution_tag<Tag> &&
    requires(const S& s, Tag tag, span_for<Tag, const float> q, ragged_rows_for<Tag, const float> k,
             ragged_for<Tag, const index_t> c, span_for<Tag, float> out) {
  s.score(tag, q, k, c, out);
};

}  // namespace dynllava
