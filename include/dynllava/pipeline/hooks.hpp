// SPDX-License-Identifier: Apache-2.0
/// @file hooks.hpp
/// @brief One call per decision point, for engines that keep their own layer loop (DESIGN.md
/// section 5, way 1; docs/integration.md). Each hook reads the hidden states entering the
/// sparse layer and returns what to keep; `kv_session` and `decode_without_cache` are built from
/// exactly these calls.
///
/// `hidden` is always the whole batch, `[rows, H]` host, packed in the order `segments`
/// describes (sequence by sequence). Returned positions are local to each sequence's candidate
/// list of the kind (`cpu::candidate_rows`), ascending.
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/selection.hpp>
#include <dynllava/select/topk.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dynllava {

/// @brief Each sequence's image candidates split into groups, one per turn (a run of image
/// segments with the same `turn`, in segment order). Each group is ranked on its own (its own
/// predictor call, its own top-k), in prefill with KV cache, where a turn's image arrives in its
/// own call, and without KV cache alike, so both modes keep the same tokens.
struct image_groups {
  std::vector<index_t> indptr{0};     ///< [groups + 1] CSR over the candidates, in their order
  std::vector<std::size_t> sequence;  ///< [groups] the sequence of each group
};

namespace cpu {

/// Groups of `segments`' image candidates by turn (see `image_groups`).
inline image_groups group_images_by_turn(segment_table<host_space> segments) {
  image_groups g;
  for (std::size_t b = 0; b < segments.batch(); ++b) {
    bool open = false;
    index_t turn = 0;
    for (index_t i = segments.indptr[b]; i < segments.indptr[b + 1]; ++i) {
      const segment& seg = segments.segments[static_cast<std::size_t>(i)];
      if (seg.kind != segment_kind::image) continue;
      if (!open || seg.turn != turn) {
        g.indptr.push_back(g.indptr.back());
        g.sequence.push_back(b);
        open = true;
        turn = seg.turn;
      }
      g.indptr.back() += seg.length;
    }
  }
  return g;
}

}  // namespace cpu

namespace detail {

/// Top `floor(n * ratio)` of each group by `scores` (candidate order), as kept positions local
/// to each sequence's candidate list.
inline host_selection topk_by_group(const image_groups& g, const host_selection& cands,
                                    const std::vector<float>& scores, double ratio) {
  const auto sel = cpu::topk({make_host_span(g.indptr), make_host_span(scores)}, keep_ratio(ratio));
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

/// Rows of the candidates of `kind` gathered from the packed batch `hidden`.
inline std::vector<float> gather_candidates(host_span<const float> hidden, index_t H,
                                            segment_table<host_space> segments,
                                            const host_selection& cands) {
  const auto rows = cpu::global_rows(cands, segments);
  std::vector<float> x(rows.size() * static_cast<std::size_t>(H));
  cpu::gather_rows(hidden, H, make_host_span(rows), make_host_span(x));
  return x;
}

/// @throws dynllava::error unless `hidden` is `[rows of segments, H]`.
inline void check_hidden(host_span<const float> hidden, index_t H, segment_table<host_space> segments,
                         const char* who) {
  const index_t total = validate(segments, who);
  DYNLLAVA_EXPECTS(H > 0 && hidden.size() == static_cast<std::size_t>(total) * static_cast<std::size_t>(H),
                   "{}: hidden must be [rows = {}, H = {}] = {} values, got {}", who, total, H,
                   static_cast<std::size_t>(total) * static_cast<std::size_t>(H), hidden.size());
}

}  // namespace detail

namespace cpu {

/// @brief Prefill (and each step without KV cache): the image tokens to keep, by the image
/// predictor's `logit0 - logit1` and a top `floor(n * keep_ratio)` per (sequence, turn).
/// @param[in] hidden `[rows, H]` host: hidden states entering the sparse layer (H from `image`)
/// @throws dynllava::error on shapes that disagree or a ratio outside [0, 1].
inline host_selection select_images(const image_predictor& image, host_span<const float> hidden,
                                    segment_table<host_space> segments, double keep_ratio) {
  const index_t H = image.config().hidden;
  dynllava::detail::check_hidden(hidden, H, segments, "select_images");
  const auto cands = candidate_rows(segments, segment_kind::image);
  const auto groups = group_images_by_turn(segments);
  const auto x = dynllava::detail::gather_candidates(hidden, H, segments, cands);
  std::vector<float> scores(cands.positions.size());
  image.score(host, {make_host_span(groups.indptr), make_host_span(x), H}, make_host_span(scores));
  return dynllava::detail::topk_by_group(groups, cands, scores, keep_ratio);
}

/// @brief FastV: the image tokens to keep, by the head-averaged attention that each sequence's
/// last row pays them at layer `K - 1`, top `floor(n * keep_ratio)` per (sequence, turn).
/// @param[in] last_queries `[batch, H]` host: each sequence's last row's query (RoPE applied)
/// @param[in] keys ragged `[rows, H]` host: the keys of every row the segments describe
/// @throws dynllava::error on shapes that disagree.
inline host_selection select_images_fastv(const fastv_scorer& fastv, host_span<const float> last_queries,
                                          host_ragged_rows<const float> keys,
                                          segment_table<host_space> segments, double keep_ratio) {
  const index_t total = validate(segments, "select_images_fastv");
  DYNLLAVA_EXPECTS(keys.batch() == segments.batch() && keys.rows() == static_cast<std::size_t>(total),
                   "select_images_fastv: keys ({} rows, {} sequences) must match the segments ({} "
                   "rows, {} sequences)", keys.rows(), keys.batch(), total, segments.batch());
  const auto cands = candidate_rows(segments, segment_kind::image);
  std::vector<float> scores(cands.positions.size());
  fastv.score(host, last_queries, keys, cands.view(), make_host_span(scores));
  return dynllava::detail::topk_by_group(group_images_by_turn(segments), cands, scores, keep_ratio);
}

/// @brief Prefill in one call: `select_images`, then the sparse context (every text row, the
/// kept image rows, original positions) that layers `>= sparse_layer` run on.
/// @param[out] image_kept optional: the kept image positions
/// @param[in] options `position_offsets` when the prompt continues a cached conversation
inline host_sparse_context prune_prefill(const image_predictor& image, host_span<const float> hidden,
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
inline void gate_new_tokens(const output_predictor& output, host_ragged_rows<const float> hidden,
                            host_span<std::uint8_t> keep) {
  std::vector<float> logits(2 * hidden.rows());
  output.logits(host, hidden, make_host_span(logits));
  argmax_gate({hidden.indptr, make_host_span(std::as_const(logits))}, keep);
}

/// @brief Decode without KV cache: the generated tokens to keep, among each sequence's output
/// tokens but the newest (`context_options{.pin_last_output = true}` enumerates them).
/// `per_sequence_argmax` keeps `logit0 > logit1` (what the KV mode keeps);
/// `released_batch_max_topk` keeps, in each sequence, the top `min(k, n)` by raw `logit0` with
/// `k` the batch maximum of argmax keeps (the released code).
/// @param[in] hidden `[rows, H]` host: hidden states entering the sparse layer (H from `output`)
inline host_selection select_outputs(const output_predictor& output, host_span<const float> hidden,
                                     segment_table<host_space> segments, output_rule rule) {
  const index_t H = output.config().hidden;
  dynllava::detail::check_hidden(hidden, H, segments, "select_outputs");
  const auto cands = candidate_rows(segments, segment_kind::output, {.pin_last_output = true});
  const auto x = dynllava::detail::gather_candidates(hidden, H, segments, cands);
  const std::size_t n = cands.positions.size();
  std::vector<float> logits(2 * n);
  output.logits(host, {make_host_span(cands.indptr), make_host_span(x), H}, make_host_span(logits));
  const ragged_logits<host_space> lg{make_host_span(cands.indptr), make_host_span(std::as_const(logits))};
  host_selection kept;
  kept.indptr.assign(cands.indptr.size(), 0);
  kept.positions.resize(n);
  if (rule == output_rule::per_sequence_argmax) {
    kept.positions.resize(static_cast<std::size_t>(
        logit_argmax{}.select(host, lg, make_host_span(kept.indptr), make_host_span(kept.positions))));
    return kept;
  }
  std::vector<std::uint8_t> keep(n);
  argmax_gate(lg, make_host_span(keep));
  index_t kmax = 0;
  for (std::size_t b = 0; b < cands.batch(); ++b) {
    kmax = std::max<index_t>(kmax, static_cast<index_t>(std::count(keep.begin() + cands.indptr[b],
                                                                     keep.begin() + cands.indptr[b + 1], 1)));
  }
  std::vector<float> logit0(n);
  std::vector<index_t> ks(cands.batch());
  for (std::size_t i = 0; i < n; ++i) logit0[i] = logits[2 * i];
  for (std::size_t b = 0; b < cands.batch(); ++b) ks[b] = std::min(kmax, cands.indptr[b + 1] - cands.indptr[b]);
  return topk({make_host_span(cands.indptr), make_host_span(std::as_const(logit0))},
              topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(ks))));
}

/// @brief Decode without KV cache in one call: images as in prefill, generated tokens by
/// `select_outputs`, the newest token pinned; returns the context layers `>= sparse_layer` run on.
/// @param[out] image_kept, output_kept optional: the selections
inline host_sparse_context prune_no_cache(const image_predictor& image, const output_predictor& output,
                                          host_span<const float> hidden,
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
