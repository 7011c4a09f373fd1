// SPDX-License-Identifier: Apache-2.0
/// @file hooks.hpp
/// @brief One call per decision point, for engines that keep their own layer loop (DESIGN.md
/// section 5, way 1; docs/integration.md). Each hook reads the hidden states entering the
/// sparse layer and returns what to keep; `kv_session` and `decode_without_cache` are built from
/// exactly these calls.
///
/// `hidden` is always the whole batch, `[rows, H]` host, packed in the order `segments`
/// describes (sequence by sequence). Returned positions are local to each sequence's candidate
/// list of the kind (`cpu::candidate_rows`), ascending. Every hook that ranks can also hand out
/// what it saw (`token_decisions`: logits, margins or scores, keep flags).
///
/// The hooks are templates over the scorer concepts (`two_way_predictor<P, host_t>`,
/// `attention_scorer<S, host_t>`), so an engine's own predictor plugs in as the bundled ones do.
/// The decision points that need no segment table are written once for every execution tag in
/// `tagged_hooks.hpp` (`select_tokens`, `gate_new_tokens(exec, ...)`: what a CUDA engine calls);
/// `cpu::select_images` and `cpu::gate_new_tokens` run through `select_tokens(host, ...)` and
/// `gate_new_tokens(host, ...)`.
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/image_groups.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/pipeline/tagged_hooks.hpp>
#include <dynllava/pipeline/token_decisions.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dynllava {

namespace detail {

/// Kept positions local to each group of `g` (`sel`) as positions local to each sequence's
/// candidate list.
inline host_selection group_to_candidates(const image_groups& g, const host_selection& cands,
                                          const host_selection& sel) {
  host_selection out;
  out.indptr.assign(cands.batch() + 1, 0);
  for (std::size_t gi = 0; gi < g.sequence.size(); ++gi) {
    const std::size_t b = g.sequence[gi];
    const index_t offset = g.indptr[gi] - cands.indptr[b];
    for (index_t i = sel.indptr[gi]; i < sel.indptr[gi + 1]; ++i) {
      out.positions.push_back(sel.positions[static_cast<std::size_t>(i)] + offset);
    }
    out.indptr[b + 1] += sel.indptr[gi + 1] - sel.indptr[gi];
  }
  for (std::size_t b = 0; b < cands.batch(); ++b) out.indptr[b + 1] += out.indptr[b];
  return out;
}

/// Top `floor(n * ratio)` of each group by `scores` (candidate order), as kept positions local
/// to each sequence's candidate list.
inline host_selection topk_by_group(const image_groups& g, const host_selection& cands,
                                    const std::vector<float>& scores, double ratio) {
  return group_to_candidates(
      g, cands,
      cpu::select_kept(budgeted_topk{keep_ratio(ratio), {}},
                       host_ragged<const float>{make_host_span(g.indptr), make_host_span(scores)},
                       g.sequence.size(), scores.size()));
}

/// Rows of the candidates of `kind` gathered from the packed batch `hidden`.
inline std::vector<float> gather_candidates(host_span<const float> hidden, index_t H,
                                            segment_table<host_space> segments,
                                            const host_selection& cands) {
  const auto rows = cpu::global_rows(cands, segments);
  std::vector<float> x(rows.size() * static_cast<std::size_t>(H));
  cpu::gather_rows(hidden, H, make_host_span(rows), make_host_span(x));
  return x;
}

/// @throws dynllava::error unless `hidden` is `[total, H]`.
/// @param total the segments' rows (`validate(segments, who)`)
inline void check_hidden(host_span<const float> hidden, index_t H, index_t total, const char* who) {
  DYNLLAVA_EXPECTS(
      H > 0 && hidden.size() == static_cast<std::size_t>(total) * static_cast<std::size_t>(H),
      "{}: hidden must be [rows = {}, H = {}] = {} values, got {}", who, total, H,
      static_cast<std::size_t>(total) * static_cast<std::size_t>(H), hidden.size());
}

}  // namespace detail

namespace cpu {

/// @brief Prefill (and each step without KV cache): the image tokens to keep, by the scorer's
/// score (a `two_way_predictor`: `logit0 - logit1`; any other `token_scorer`, e.g. L2 norm or
/// random, by its score) and a top `floor(n * keep_ratio)` per (sequence, turn).
/// @param[in] hidden `[rows, H]` host: hidden states entering the sparse layer (H =
///            `image.hidden()` for a predictor, else `hidden.size() / rows`)
/// @param[out] seen optional: the candidates' logits (predictors only), scores and keep flags
/// @throws dynllava::error on shapes that disagree or a ratio outside [0, 1].
template <token_scorer<host_t> S>
host_selection select_images(const S& image, host_span<const float> hidden,
                             segment_table<host_space> segments, double keep_ratio,
                             token_decisions* seen = nullptr) {
  constexpr bool predictor = two_way_predictor<S, host_t>;
  const index_t total = validate(segments, "select_images");
  index_t H = 0;
  if constexpr (predictor) {
    H = image.hidden();
  } else {
    H = total > 0 ? static_cast<index_t>(hidden.size() / static_cast<std::size_t>(total)) : 0;
  }
  dynllava::detail::check_hidden(hidden, H, total, "select_images");
  const auto cands = candidate_rows(segments, segment_kind::image);
  const auto groups = group_images_by_turn(segments);
  const auto x = dynllava::detail::gather_candidates(hidden, H, segments, cands);
  const std::size_t n = cands.positions.size();
  const host_ragged_rows<const float> rows{make_host_span(groups.indptr), make_host_span(x), H};
  // the tag-generic decision (tagged_hooks.hpp) over the groups, then candidate positions
  std::vector<float> logits(predictor ? 2 * n : 0), scores(n);
  host_selection by_group;
  by_group.indptr.resize(groups.sequence.size() + 1);
  by_group.positions.resize(n);
  const index_t count = select_tokens(
      host, image, rows, budgeted_topk{dynllava::keep_ratio(keep_ratio), {}},
      selection_outputs<host_t>{make_host_span(scores), make_host_span(by_group.indptr),
                                make_host_span(by_group.positions), make_host_span(logits)});
  by_group.positions.resize(static_cast<std::size_t>(count));
  auto kept = dynllava::detail::group_to_candidates(groups, cands, by_group);
  if (seen != nullptr) {
    seen->set_kept(cands.indptr, kept);
    seen->logits = std::move(logits);
    seen->scores = std::move(scores);
  }
  return kept;
}

/// @brief FastV: the image tokens to keep, by the head-averaged attention that each sequence's
/// last row pays them at layer `K - 1`, top `floor(n * keep_ratio)` per (sequence, turn).
/// @param[in] last_queries `[batch, H]` host: each sequence's last row's query (RoPE applied)
/// @param[in] keys ragged `[rows, H]` host: the keys of every row the segments describe
/// @param[out] seen optional: the candidates' attention scores and keep flags (no logits)
/// @throws dynllava::error on shapes that disagree.
template <attention_scorer<host_t> S>
host_selection select_images_fastv(const S& fastv, host_span<const float> last_queries,
                                   host_ragged_rows<const float> keys,
                                   segment_table<host_space> segments, double keep_ratio,
                                   token_decisions* seen = nullptr) {
  const index_t total = validate(segments, "select_images_fastv");
  DYNLLAVA_EXPECTS(
      keys.batch() == segments.batch() && keys.rows() == static_cast<std::size_t>(total),
      "select_images_fastv: keys ({} rows, {} sequences) must match the segments ({} "
      "rows, {} sequences)",
      keys.rows(), keys.batch(), total, segments.batch());
  const auto cands = candidate_rows(segments, segment_kind::image);
  std::vector<float> scores(cands.positions.size());
  fastv.score(host, last_queries, keys, cands.view(), make_host_span(scores));
  auto kept =
      dynllava::detail::topk_by_group(group_images_by_turn(segments), cands, scores, keep_ratio);
  if (seen != nullptr) {
    seen->set_kept(cands.indptr, kept);
    seen->logits.clear();
    seen->scores = std::move(scores);
  }
  return kept;
}

/// @brief Prefill in one call: `select_images`, then the sparse context (every text row, the
/// kept image rows, original positions) that layers `>= sparse_layer` run on.
/// @param[out] image_kept optional: the kept image positions
/// @param[in] options `position_offsets` when the prompt continues a cached conversation
template <token_scorer<host_t> S>
host_sparse_context prune_prefill(const S& image, host_span<const float> hidden,
                                  segment_table<host_space> segments, double keep_ratio,
                                  host_selection* image_kept = nullptr,
                                  const context_options& options = {}) {
  const auto kept = select_images(image, hidden, segments, keep_ratio);
  const std::vector<kind_selection> pruned{{segment_kind::image, kept.view()}};
  auto ctx = build_sparse_context(segments, make_host_span(pruned), options);
  if (image_kept != nullptr) *image_kept = kept;
  return ctx;
}

/// @brief Decode with KV cache: whether each new token's K/V enter the layers `>= sparse_layer`
/// (`logit0 > logit1` of the output predictor; the token attends to itself either way).
/// @param[in] hidden ragged `[tokens, H]` host: the new tokens' hidden states at the sparse layer
/// @param[out] keep `[tokens]` host: 1 = keep
/// @param[out] seen optional: the tokens' gate logits, margins and keep flags
/// @throws dynllava::error when `hidden` is malformed, its width is not `output.hidden()`, or
///         `keep` does not have one entry per row (before the predictor runs).
template <two_way_predictor<host_t> P>
void gate_new_tokens(const P& output, host_ragged_rows<const float> hidden,
                     host_span<std::uint8_t> keep, token_decisions* seen = nullptr) {
  validate(hidden, "gate_new_tokens: hidden");
  DYNLLAVA_EXPECTS(hidden.width == output.hidden(),
                   "gate_new_tokens: the output predictor reads width {}, the rows have width {}",
                   output.hidden(), hidden.width);
  DYNLLAVA_EXPECTS(keep.size() == hidden.rows(),
                   "gate_new_tokens: keep must have one entry per row ({}), got {}", hidden.rows(),
                   keep.size());
  std::vector<float> logits(2 * hidden.rows());
  std::vector<index_t> kept_indptr(hidden.batch() + 1), kept(hidden.rows());
  dynllava::gate_new_tokens(
      host, output, hidden,
      gate_outputs<host_t>{make_host_span(logits), keep, make_host_span(kept_indptr),
                           make_host_span(kept)});
  if (seen != nullptr) {
    seen->indptr.assign(hidden.indptr.begin(), hidden.indptr.end());
    seen->keep.assign(keep.begin(), keep.end());
    seen->logits = std::move(logits);
    seen->margins_from_logits();
  }
}

/// @brief Decode without KV cache: the generated tokens to keep, among each sequence's output
/// tokens but the newest (`context_options{.pin_last_output = true}` enumerates them).
/// `per_sequence_argmax` keeps `logit0 > logit1` (what the KV mode keeps);
/// `released_batch_max_topk` keeps, in each sequence, the top `min(k, n)` by raw `logit0` with
/// `k` the batch maximum of argmax keeps (the released code's kept sets).
/// @param[in] hidden `[rows, H]` host: hidden states entering the sparse layer (H =
/// `output.hidden()`)
/// @param[out] seen optional: the candidates' logits, margins and keep flags
template <two_way_predictor<host_t> P>
host_selection select_outputs(const P& output, host_span<const float> hidden,
                              segment_table<host_space> segments, output_rule rule,
                              token_decisions* seen = nullptr) {
  const index_t H = output.hidden();
  dynllava::detail::check_hidden(hidden, H, validate(segments, "select_outputs"), "select_outputs");
  const auto cands = candidate_rows(segments, segment_kind::output, {.pin_last_output = true});
  const auto x = dynllava::detail::gather_candidates(hidden, H, segments, cands);
  const std::size_t n = cands.positions.size();
  std::vector<float> logits(2 * n);
  output.logits(host, {make_host_span(cands.indptr), make_host_span(x), H}, make_host_span(logits));
  const ragged_logits<host_space> lg{make_host_span(cands.indptr),
                                     make_host_span(std::as_const(logits))};
  host_selection kept;
  if (rule == output_rule::per_sequence_argmax) {
    kept = select_kept(logit_argmax{}, lg, cands.batch(), n);
  } else {
    std::vector<std::uint8_t> keep(n);
    argmax_gate(lg, make_host_span(keep));
    index_t kmax = 0;
    for (std::size_t b = 0; b < cands.batch(); ++b) {
      kmax = std::max<index_t>(
          kmax, static_cast<index_t>(std::count(keep.begin() + cands.indptr[b],
                                                keep.begin() + cands.indptr[b + 1], 1)));
    }
    std::vector<float> logit0(n);
    std::vector<index_t> ks(cands.batch());
    for (std::size_t i = 0; i < n; ++i) logit0[i] = logits[2 * i];
    for (std::size_t b = 0; b < cands.batch(); ++b)
      ks[b] = std::min(kmax, cands.indptr[b + 1] - cands.indptr[b]);
    kept = topk({make_host_span(cands.indptr), make_host_span(std::as_const(logit0))},
                topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(ks))));
  }
  if (seen != nullptr) {
    seen->set_kept(cands.indptr, kept);
    seen->logits = std::move(logits);
    seen->margins_from_logits();
  }
  return kept;
}

/// @brief Decode without KV cache in one call: images as in prefill, generated tokens by
/// `select_outputs`, the newest token pinned; returns the context layers `>= sparse_layer` run on.
/// @param[out] image_kept, output_kept optional: the selections
template <two_way_predictor<host_t> PI, two_way_predictor<host_t> PO>
host_sparse_context prune_no_cache(const PI& image, const PO& output, host_span<const float> hidden,
                                   segment_table<host_space> segments, double keep_ratio,
                                   output_rule rule = output_rule::per_sequence_argmax,
                                   host_selection* image_kept = nullptr,
                                   host_selection* output_kept = nullptr) {
  const auto images = select_images(image, hidden, segments, keep_ratio);
  const auto outputs = select_outputs(output, hidden, segments, rule);
  const std::vector<kind_selection> pruned{{segment_kind::image, images.view()},
                                           {segment_kind::output, outputs.view()}};
  auto ctx = build_sparse_context(segments, make_host_span(pruned), {.pin_last_output = true});
  if (image_kept != nullptr) *image_kept = images;
  if (output_kept != nullptr) *output_kept = outputs;
  return ctx;
}

}  // namespace cpu
}  // namespace dynllava
