// SPDX-License-Identifier: Apache-2.0
/// @file steps.hpp
/// @brief The steps `kv_session` and `decode_without_cache` share: image selection at the sparse
/// layer (predictor or FastV), option checks, layer calls with probes, work traces.
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/cost/trace.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/select/topk.hpp>

#include <cstdint>
#include <vector>

namespace dynllava {

namespace detail {

/// Adds one layer's work to a trace: every row of sequence `b` attends to `cached[b]` cached
/// tokens and to the rows of its sequence up to itself.
inline void trace_layer(cost::layer_trace& t, const std::vector<index_t>& indptr,
                        const std::vector<index_t>& cached) {
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const std::int64_t n = indptr[b + 1] - indptr[b];
    t.query_rows += n;
    t.attention_pairs += n * (cached.empty() ? 0 : cached[b]) + n * (n + 1) / 2;
  }
}

/// Image tokens the segments hold.
inline index_t image_candidates(segment_table<host_space> t) {
  index_t n = 0;
  for (const segment& seg : t.segments) n += seg.kind == segment_kind::image ? seg.length : 0;
  return n;
}

/// The image predictor's work: each group's image tokens, all pairs within a group.
inline void trace_image_predictor(cost::trace& t, const image_groups& g) {
  for (std::size_t gi = 0; gi + 1 < g.indptr.size(); ++gi) {
    const std::int64_t n = g.indptr[gi + 1] - g.indptr[gi];
    t.image_tokens_scored += n;
    t.image_attention_pairs += n * n;
  }
}

/// Rows of `src` (ragged, width H) listed by a sparse context, as a new ragged batch.
inline void gather_context(const std::vector<float>& src, index_t H,
                           const host_sparse_context& ctx, std::vector<float>& dst) {
  dst.resize(ctx.rows.size() * static_cast<std::size_t>(H));
  cpu::gather_rows(host_span<const float>(src.data(), src.size()), H, make_host_span(ctx.rows),
                   make_host_span(dst));
}

/// The last row of each sequence of `rows` (`[rows, H]`, ragged by `indptr`): `[batch, H]`.
inline std::vector<float> last_rows(const std::vector<float>& rows, const std::vector<index_t>& indptr,
                                    index_t H) {
  const auto Hs = static_cast<std::size_t>(H);
  std::vector<float> out;
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const auto last = static_cast<std::size_t>(indptr[b + 1] - 1);
    out.insert(out.end(), rows.begin() + static_cast<std::ptrdiff_t>(last * Hs),
               rows.begin() + static_cast<std::ptrdiff_t>((last + 1) * Hs));
  }
  return out;
}

/// `[batch, vocab]` logits of each sequence's last row of the final hidden states `h`.
template <class Model>
std::vector<float> last_logits(const Model& m, const std::vector<index_t>& indptr,
                               const std::vector<float>& h) {
  const auto last = last_rows(h, indptr, m.hidden());
  std::vector<float> out((indptr.size() - 1) * static_cast<std::size_t>(m.vocab()));
  m.logits(make_host_span(last), make_host_span(out));
  return out;
}

/// Image top-k at the sparse layer by the image predictor (`cpu::select_images`), with the
/// run's statistics and work.
inline host_selection select_images(const image_predictor* pred, const std::vector<float>& hidden,
                                    segment_table<host_space> t, const sparsifier_options& o,
                                    run_stats& stats, cost::trace& work) {
  host_selection kept;
  if (!o.prune_images) {
    kept = host_selection::keep_all(cpu::candidate_rows(t, segment_kind::image).indptr);
  } else {
    DYNLLAVA_EXPECTS(pred != nullptr, "select_images: no image predictor");  // checked up front
    trace_image_predictor(work, cpu::group_images_by_turn(t));
    kept = cpu::select_images(*pred, make_host_span(hidden), t, o.vision_keep_ratio);
  }
  stats.image_tokens += image_candidates(t);
  stats.image_kept += static_cast<index_t>(kept.positions.size());
  return kept;
}

/// FastV at the sparse layer (`cpu::select_images_fastv`): each sequence's last row in the call
/// ranks its image tokens, from the queries `q` and keys `k` (`[rows, H]`, ragged by `indptr`)
/// of the last full layer.
template <class Model>
host_selection select_images_fastv(const Model& m, const std::vector<float>& q,
                                   const std::vector<float>& k, const std::vector<index_t>& indptr,
                                   segment_table<host_space> segments, const sparsifier_options& o,
                                   run_stats& stats) {
  if constexpr (requires { m.heads(); }) {
    const index_t H = m.hidden();
    const auto queries = last_rows(q, indptr, H);
    auto kept = cpu::select_images_fastv(fastv_scorer{m.heads(), H / m.heads()}, make_host_span(queries),
                                         {make_host_span(indptr), make_host_span(k), H}, segments,
                                         o.vision_keep_ratio);
    stats.image_tokens += image_candidates(segments);
    stats.image_kept += static_cast<index_t>(kept.positions.size());
    return kept;
  } else {
    DYNLLAVA_FAIL("vision_rule::fastv needs a probing_decoder");  // checked up front
  }
}

/// @throws dynllava::error when the options cannot run on a model of `layers` layers with
/// these predictors (a null predictor is an error wherever the options say to use it).
template <class Model, class Cache>
void check_options(const sparsifier_options& o, index_t layers, const image_predictor* image,
                   const output_predictor* output, const char* who) {
  DYNLLAVA_EXPECTS(o.sparse_layer >= 0 && o.sparse_layer <= layers,
                   "{}: sparse_layer must be in [0, {}], got {}", who, layers, o.sparse_layer);
  DYNLLAVA_EXPECTS(o.vision_keep_ratio >= 0.0 && o.vision_keep_ratio <= 1.0,
                   "{}: vision_keep_ratio must be in [0, 1], got {}", who, o.vision_keep_ratio);
  if (o.vision == vision_rule::fastv) {
    DYNLLAVA_EXPECTS(o.sparse_layer >= 1,
                     "{}: vision_rule::fastv reads the attention of layer sparse_layer - 1, so "
                     "sparse_layer must be >= 1, got {}", who, o.sparse_layer);
    DYNLLAVA_EXPECTS((probing_decoder<Model, Cache>),
                     "{}: vision_rule::fastv needs a probing_decoder (one whose layer() takes "
                     "layer_probes to hand out its queries)", who);
  } else {
    DYNLLAVA_EXPECTS(!o.prune_images || image != nullptr,
                     "{}: prune_images with vision_rule::predictor needs an image predictor, got "
                     "null (set prune_images = false for dense vision)", who);
  }
  DYNLLAVA_EXPECTS(!o.gate_outputs || output != nullptr,
                   "{}: gate_outputs needs an output predictor, got null (set gate_outputs = "
                   "false for dense text)", who);
}


/// Runs `m.layer` with probes when the model offers them (a plain decoder gets none).
template <class Model, class Cache>
void run_layer(const Model& m, index_t l, host_ragged_rows<float> rows, host_span<const index_t> pos,
               const Cache* cache, host_span<float> k, host_span<float> v, layer_probes probes) {
  if constexpr (probing_decoder<Model, Cache>) {
    m.layer(l, rows, pos, cache, k, v, probes);
  } else {
    m.layer(l, rows, pos, cache, k, v);
  }
}

inline void count_rows(run_stats& s, index_t layers, index_t from, index_t to, std::size_t rows) {
  s.rows_per_layer.resize(static_cast<std::size_t>(layers), 0);
  for (index_t l = from; l < to; ++l) s.rows_per_layer[static_cast<std::size_t>(l)] += static_cast<index_t>(rows);
}

}  // namespace detail

}  // namespace dynllava
