// SPDX-License-Identifier: Apache-2.0
/// @file tagged_hooks.hpp
/// @brief The decision points written once for every execution tag: `select_tokens` (rank a
/// ragged batch of rows with any `token_scorer` and keep what any `token_selector` keeps: the
/// prefill image top-k) and `gate_new_tokens` (the online gate of a decode step with any
/// `two_way_predictor`). With `dynllava::host` they run the host models; with
/// `cuda::on_stream{s}` the CUDA models (`dynllava/dynllava.cuh`: `cuda::image_predictor_scorer`,
/// `cuda::output_predictor_scorer`, `cuda::budgeted_topk`, ...), in stream order.
///
/// Every buffer is the caller's, in the tag's memory space: nothing here allocates, reads device
/// memory or synchronises, so on CUDA a call is graph-capturable whenever the scorer and the
/// selector are (the bundled CUDA models are, given their workspaces). The host hooks of
/// `hooks.hpp` (`cpu::select_images`, `cpu::gate_new_tokens`, ...) add what needs the prompt's
/// segment table (candidate enumeration, per-turn groups, decision views) and run through these
/// (`select_tokens(host, ...)`, `gate_new_tokens(host, ...)`), so the drivers' two decisions are
/// this code.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace dynllava {

/// @brief Where `gate_new_tokens` writes, in the memory space of `Tag`; non-owning. For a batch
/// of `tokens` new tokens over `batch` sequences.
template <class Tag>
struct gate_outputs {
  span_for<Tag, float> logits;            ///< [tokens, 2] the predictor's logits, channel 0 = keep
  span_for<Tag, std::uint8_t> keep;       ///< [tokens] 1 = the token's K/V enter the sparse
                                          ///< layers; or empty to skip the mask
  span_for<Tag, index_t> kept_indptr;     ///< [batch + 1] CSR offsets of the kept tokens
  span_for<Tag, index_t> kept_positions;  ///< [>= tokens] kept tokens, local to each sequence,
                                          ///< ascending (the first `kept_indptr[batch]` hold them)
};

/// @brief Where `select_tokens` writes, in the memory space of `Tag`; non-owning. For a batch of
/// `rows` candidate rows over `batch` groups (sequences, or a sequence's turns).
template <class Tag>
struct selection_outputs {
  span_for<Tag, float> scores;            ///< [rows] the scorer's scores (a predictor's margin)
  span_for<Tag, index_t> kept_indptr;     ///< [batch + 1] CSR offsets of the kept rows
  span_for<Tag, index_t> kept_positions;  ///< [>= rows] kept rows, local to each group, ascending
  span_for<Tag, float> logits{};          ///< optional [rows, 2]: a `two_way_predictor`'s logits
                                          ///< (then `scores` are their margins); empty to skip
};

namespace detail {

/// @throws dynllava::error naming `who` unless the host-visible extents of `rows` and of the
///         CSR outputs agree (a positive width, whole rows, `indptr` of batch + 1 entries,
///         `positions` with room for every row). Reads no device memory.
template <class Tag>
void check_tagged_rows(ragged_rows_for<Tag, const float> rows, std::size_t indptr_size,
                       std::size_t positions_size, const char* who) {
  DYNLLAVA_EXPECTS(rows.width > 0, "{}: rows.width must be > 0, got {}", who, rows.width);
  DYNLLAVA_EXPECTS(rows.values.size() % static_cast<std::size_t>(rows.width) == 0,
                   "{}: rows hold {} values, not a whole number of rows of width {}", who,
                   rows.values.size(), rows.width);
  DYNLLAVA_EXPECTS(!rows.indptr.empty() || rows.values.empty(),
                   "{}: an empty rows.indptr describes an empty batch, but {} rows were given", who,
                   rows.rows());
  const std::size_t batch = rows.batch();
  DYNLLAVA_EXPECTS(indptr_size == batch + 1,
                   "{}: kept_indptr must have batch + 1 = {} entries, got {}", who, batch + 1,
                   indptr_size);
  DYNLLAVA_EXPECTS(positions_size >= rows.rows(),
                   "{}: kept_positions must hold one entry per row ({}), got {}", who, rows.rows(),
                   positions_size);
  if constexpr (std::same_as<execution_space_t<Tag>, host_space>) {
    if (!rows.indptr.empty()) validate_indptr(rows.indptr, rows.rows(), who);
  }
}

}  // namespace detail

/// @brief Ranks each group's rows by `scorer` and keeps what `selector` keeps (the prefill image
/// top-k: the image predictor's candidate rows grouped by (sequence, turn), a `budgeted_topk` of
/// `keep_ratio(0.2)`), on any backend.
/// @param[in] rows ragged `[rows, H]` in the tag's memory space, one group per CSR entry
/// @param[out] out `scores` `[rows]`, the kept rows' CSR, and optionally a predictor's logits
///             (`scorer.logits` then `keep_margins(exec, ...)` instead of `scorer.score`)
/// @return the number of kept rows when the host knows it (host tag), else
///         `kept_count_on_device` (it is `out.kept_indptr[batch]` on the device)
/// @throws dynllava::error naming the argument on extents that disagree, before the scorer runs;
///         what the scorer and the selector throw.
template <execution_tag Tag, token_scorer<Tag> S, class Selector>
requires token_selector<Selector, Tag, ragged_for<Tag, const float>> index_t
select_tokens(Tag exec, const S& scorer, ragged_rows_for<Tag, const float> rows,
              const Selector& selector, const selection_outputs<Tag>& out) {
  detail::check_tagged_rows<Tag>(rows, out.kept_indptr.size(), out.kept_positions.size(),
                                 "select_tokens");
  if constexpr (two_way_predictor<S, Tag>) {
    DYNLLAVA_EXPECTS(rows.width == scorer.hidden(),
                     "select_tokens: the predictor reads width {}, the rows have width {}",
                     scorer.hidden(), rows.width);
  }
  DYNLLAVA_EXPECTS(out.scores.size() == rows.rows(),
                   "select_tokens: scores must have one entry per row ({}), got {}", rows.rows(),
                   out.scores.size());
  if (out.logits.empty()) {
    scorer.score(exec, rows, out.scores);
  } else if constexpr (two_way_predictor<S, Tag>) {
    DYNLLAVA_EXPECTS(out.logits.size() == 2 * rows.rows(),
                     "select_tokens: logits must be empty or [rows = {}, 2], got {} values",
                     rows.rows(), out.logits.size());
    scorer.logits(exec, rows, out.logits);
    keep_margins(exec, span_for<Tag, const float>(out.logits), out.scores);
  } else {
    DYNLLAVA_FAIL("select_tokens: logits were asked of a scorer that is not a two_way_predictor");
  }
  const ragged_for<Tag, const float> ranked{rows.indptr, span_for<Tag, const float>(out.scores)};
  return selector.select(exec, ranked, out.kept_indptr, out.kept_positions);
}

/// @brief The online gate of a decode step (METHOD.md 4b), on any backend: the output
/// predictor's logits for each new token's hidden state at the sparse layer, then
/// `logit0 > logit1` as a keep mask and as kept positions (`argmax_gate(exec, ...)`).
/// @param[in] hidden ragged `[tokens, H]` in the tag's memory space (H = `output.hidden()`)
/// @param[out] out logits, mask (optional) and kept CSR
/// @throws dynllava::error naming the argument on extents that disagree, before the predictor
///         runs; what the predictor throws.
template <execution_tag Tag, two_way_predictor<Tag> P>
void gate_new_tokens(Tag exec, const P& output, ragged_rows_for<Tag, const float> hidden,
                     const gate_outputs<Tag>& out) {
  detail::check_tagged_rows<Tag>(hidden, out.kept_indptr.size(), out.kept_positions.size(),
                                 "gate_new_tokens");
  DYNLLAVA_EXPECTS(hidden.width == output.hidden(),
                   "gate_new_tokens: the output predictor reads width {}, the rows have width {}",
                   output.hidden(), hidden.width);
  DYNLLAVA_EXPECTS(out.logits.size() == 2 * hidden.rows(),
                   "gate_new_tokens: logits must be [tokens = {}, 2], got {} values", hidden.rows(),
                   out.logits.size());
  DYNLLAVA_EXPECTS(out.keep.empty() || out.keep.size() == hidden.rows(),
                   "gate_new_tokens: keep must be empty or have one entry per token ({}), got {}",
                   hidden.rows(), out.keep.size());
  output.logits(exec, hidden, out.logits);
  argmax_gate(exec, hidden.indptr, span_for<Tag, const float>(out.logits), out.keep,
              out.kept_indptr, out.kept_positions);
}

}  // namespace dynllava
