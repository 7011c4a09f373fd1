// SPDX-License-Identifier: Apache-2.0
/// @file steps.hpp
/// @brief The steps the drivers share: image selection at the sparse layer (predictor or FastV),
/// option and width checks, layer calls with probes, observer reports.
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/image_groups.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/pipeline_observer.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/pipeline/token_decisions.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/fastv_scorer.hpp>

#include <cstdint>
#include <vector>

namespace dynllava::detail {

/// Image tokens the segments hold.
inline index_t image_candidates(segment_table<host_space> t) {
  index_t n = 0;
  for (const segment& seg : t.segments) n += seg.kind == segment_kind::image ? seg.length : 0;
  return n;
}

/// Reports a layer call to `obs` (may be null).
inline void observe_layer(pipeline_observer* obs, index_t l, const std::vector<index_t>& indptr,
                          const std::vector<index_t>& cached) {
  if (obs != nullptr) obs->layer(l, make_host_span(indptr), make_host_span(cached));
}

/// Rows of `src` (ragged, width H) listed by a sparse context, as a new ragged batch.
inline void gather_context(const std::vector<float>& src, index_t H, const host_sparse_context& ctx,
                           std::vector<float>& dst) {
  dst.resize(ctx.rows.size() * static_cast<std::size_t>(H));
  cpu::gather_rows(host_span<const float>(src.data(), src.size()), H, make_host_span(ctx.rows),
                   make_host_span(dst));
}

/// The last row of each sequence of `rows` (`[rows, H]`, ragged by `indptr`): `[batch, H]`.
inline std::vector<float> last_rows(const std::vector<float>& rows,
                                    const std::vector<index_t>& indptr, index_t H) {
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
  m.logits(host, make_host_span(std::as_const(last)), make_host_span(out));
  return out;
}

/// Image top-k at the sparse layer by the image ranker (`cpu::select_images`: a predictor's
/// margin, or a plain scorer's score), with the run's statistics; `seen` gets what it saw
/// (keep-all flags and no logits when not pruning).
template <class P>
host_selection select_images(const P* pred, const std::vector<float>& hidden,
                             segment_table<host_space> t, const sparsifier_options& o,
                             run_stats& stats, pipeline_observer* obs, token_decisions& seen) {
  host_selection kept;
  if (!o.prune_images) {
    const auto cands = cpu::candidate_rows(t, segment_kind::image).indptr;
    kept = host_selection::keep_all(cands);
    seen = token_decisions{};
    seen.set_kept(cands, kept);
  } else {
    DYNLLAVA_EXPECTS(pred != nullptr, "select_images: no image predictor");  // checked up front
    if (obs != nullptr) {
      const auto groups = cpu::group_images_by_turn(t);
      obs->image_predictor(make_host_span(groups.indptr));
    }
    if constexpr (token_scorer<P, host_t>) {
      kept = cpu::select_images(*pred, make_host_span(hidden), t, o.vision_keep_ratio, &seen);
    } else {
      // An attention scorer ranks only under vision_rule::fastv (checked up front).
      DYNLLAVA_FAIL("select_images: the image ranker is not a token_scorer");
    }
  }
  stats.image_tokens += image_candidates(t);
  stats.image_kept += static_cast<index_t>(kept.positions.size());
  return kept;
}

/// FastV at the sparse layer (`cpu::select_images_fastv`): each sequence's last row in the call
/// ranks its image tokens, from the queries `q` and keys `k` (`[rows, H]`, ragged by `indptr`)
/// of the last full layer, by `scorer` when it is an `attention_scorer` given to the driver,
/// else by `fastv_scorer{heads, H / heads}`.
template <class Model, class S>
host_selection select_images_fastv(const Model& m, const S* scorer, const std::vector<float>& q,
                                   const std::vector<float>& k, const std::vector<index_t>& indptr,
                                   segment_table<host_space> segments, const sparsifier_options& o,
                                   run_stats& stats, token_decisions& seen) {
  if constexpr (requires { m.heads(); }) {
    const index_t H = m.hidden();
    const auto queries = last_rows(q, indptr, H);
    const host_ragged_rows<const float> keys{make_host_span(indptr), make_host_span(k), H};
    const auto rank = [&](const auto& by) {
      return cpu::select_images_fastv(by, make_host_span(queries), keys, segments,
                                      o.vision_keep_ratio, &seen);
    };
    const fastv_scorer bundled{m.heads(), H / m.heads()};
    host_selection kept;
    if constexpr (attention_scorer<S, host_t>) {
      kept = scorer != nullptr ? rank(*scorer) : rank(bundled);
    } else {
      kept = rank(bundled);
    }
    stats.image_tokens += image_candidates(segments);
    stats.image_kept += static_cast<index_t>(kept.positions.size());
    return kept;
  } else {
    DYNLLAVA_FAIL("vision_rule::fastv needs a probing_decoder");  // checked up front
  }
}

/// @throws dynllava::error when the options cannot run on a model of `layers` layers and width
/// `hidden` with these predictors: a null predictor wherever the options use it, a predictor of
/// another width than the model's.
template <class Model, class Cache, class PI, class PO>
void check_options(const sparsifier_options& o, index_t layers, index_t hidden, const PI* image,
                   const PO* output, const char* who) {
  DYNLLAVA_EXPECTS(o.sparse_layer >= 0 && o.sparse_layer <= layers,
                   "{}: sparse_layer must be in [0, {}], got {}", who, layers, o.sparse_layer);
  DYNLLAVA_EXPECTS(o.vision_keep_ratio >= 0.0 && o.vision_keep_ratio <= 1.0,
                   "{}: vision_keep_ratio must be in [0, 1], got {}", who, o.vision_keep_ratio);
  if (o.vision == vision_rule::fastv) {
    DYNLLAVA_EXPECTS(o.sparse_layer >= 1,
                     "{}: vision_rule::fastv reads the attention of layer sparse_layer - 1, so "
                     "sparse_layer must be >= 1, got {}",
                     who, o.sparse_layer);
    DYNLLAVA_EXPECTS((probing_decoder<Model, host_t, Cache>),
                     "{}: vision_rule::fastv needs a probing_decoder (one whose layer() takes "
                     "layer_probes to hand out its queries)",
                     who);
    DYNLLAVA_EXPECTS((image == nullptr || attention_scorer<PI, host_t>),
                     "{}: vision_rule::fastv ranks image tokens by attention, but the image slot "
                     "holds a token scorer it would ignore; pass nullptr (the bundled "
                     "fastv_scorer) or an attention_scorer",
                     who);
  } else {
    DYNLLAVA_EXPECTS(!o.prune_images || image != nullptr,
                     "{}: prune_images with vision_rule::predictor needs an image predictor, got "
                     "null (set prune_images = false for dense vision)",
                     who);
    DYNLLAVA_EXPECTS((!o.prune_images || token_scorer<PI, host_t>),
                     "{}: vision_rule::predictor needs a token_scorer (e.g. a two_way_predictor) "
                     "as image ranker; an attention scorer ranks with vision_rule::fastv",
                     who);
  }
  DYNLLAVA_EXPECTS(!o.gate_outputs || output != nullptr,
                   "{}: gate_outputs needs an output predictor, got null (set gate_outputs = "
                   "false for dense text)",
                   who);
  // scorers that read one width only say so: hidden() (token scorers), width() (attention)
  if constexpr (requires(const PI& p) {
                  { p.hidden() } -> std::convertible_to<index_t>;
                }) {
    const bool image_used = o.vision == vision_rule::predictor && o.prune_images;
    DYNLLAVA_EXPECTS(!image_used || image->hidden() == hidden,
                     "{}: the image predictor reads width {}, but the model's hidden width is {}",
                     who, image_used ? image->hidden() : 0, hidden);
  }
  if constexpr (requires(const PI& p) {
                  { p.width() } -> std::convertible_to<long long>;
                }) {
    const bool scorer_used = o.vision == vision_rule::fastv && o.prune_images && image != nullptr;
    DYNLLAVA_EXPECTS(!scorer_used || image->width() == static_cast<long long>(hidden),
                     "{}: the FastV scorer reads queries and keys of width {} (heads * "
                     "head_dim), but the model's hidden width is {}",
                     who, scorer_used ? image->width() : 0LL, hidden);
  }
  DYNLLAVA_EXPECTS(!o.gate_outputs || output->hidden() == hidden,
                   "{}: the output predictor reads width {}, but the model's hidden width is {}",
                   who, o.gate_outputs ? output->hidden() : 0, hidden);
}

/// @brief The options a driver runs with on a model of `layers` layers: as given, except that
/// with `sparse_layer == layers` (no layer at or above it) nothing is pruned, so no predictor
/// runs and none is reported (`prune_images` and `gate_outputs` off), as the cost model counts.
inline sparsifier_options runnable_options(sparsifier_options o, index_t layers) {
  if (o.sparse_layer >= layers) {
    o.prune_images = false;
    o.gate_outputs = false;
  }
  return o;
}

/// Runs `m.layer` with probes when the model offers them (a plain decoder gets none).
template <class Model, class Cache>
void run_layer(const Model& m, index_t l, host_ragged_rows<float> rows,
               host_span<const index_t> pos, const Cache* cache,
               host_span<typename Cache::value_type> k, host_span<typename Cache::value_type> v,
               layer_probes probes) {
  if constexpr (probing_decoder<Model, host_t, Cache>) {
    m.layer(host, l, rows, pos, cache, k, v, probes);
  } else {
    m.layer(host, l, rows, pos, cache, k, v);
  }
}

inline void count_rows(run_stats& s, index_t layers, index_t from, index_t to, std::size_t rows) {
  s.rows_per_layer.resize(static_cast<std::size_t>(layers), 0);
  for (index_t l = from; l < to; ++l)
    s.rows_per_layer[static_cast<std::size_t>(l)] += static_cast<index_t>(rows);
}

}  // namespace dynllava::detail
