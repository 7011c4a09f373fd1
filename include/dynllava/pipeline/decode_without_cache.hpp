// SPDX-License-Identifier: Apache-2.0
/// @file decode_without_cache.hpp
/// @brief `decode_without_cache`: one decoding step without KV cache, recomputing the context
/// with the image top-k and output-text sparsification (METHOD.md sections 2 and 4).
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/detail/steps.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/image_ranker.hpp>
#include <dynllava/pipeline/no_predictor.hpp>
#include <dynllava/pipeline/pipeline_observer.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/pipeline/token_decisions.hpp>
#include <dynllava/score/concepts.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief The KV storage type a driver without cache names for a model `M` (it passes a null
/// `const C*`): `contiguous_kv_cache` when `M` accepts it, else `paged_kv_cache`. An engine
/// decoder that takes another storage type names it explicitly.
template <class M>
using no_cache_storage_t = std::conditional_t<decoder<M, host_t, contiguous_kv_cache>,
                                              contiguous_kv_cache, paged_kv_cache>;

namespace detail {

/// What one step without KV cache saw and decided.
struct no_cache_seen {
  token_decisions images;   ///< the image candidates (reused or ranked in this step)
  token_decisions outputs;  ///< the output candidates (every generated token but the newest)
};

/// One step without KV cache (see `decode_without_cache`). With `reuse_images`, the image
/// decisions of an earlier step, covering the first image candidates of each sequence (the
/// images of earlier prompts), are taken as they are (the image predictor's decision never
/// changes while the image rows do not: METHOD.md 4a) and the image predictor runs only on the
/// image tokens after them (none within a prompt's decode steps).
template <class Model, class Cache, class PI, class PO>
std::vector<float> no_cache_step(const Model& m, const PI* image, const PO* output,
                                 host_ragged_rows<const float> rows,
                                 segment_table<host_space> segments,
                                 const sparsifier_options& given, run_stats& s,
                                 pipeline_observer* obs, no_cache_seen& seen,
                                 const token_decisions* reuse_images, const char* who) {
  check_options<Model, Cache>(given, m.layers(), m.hidden(), image, output, who);
  const sparsifier_options o = runnable_options(given, m.layers());
  const index_t total = validate(segments, who);
  validate(rows, who);
  DYNLLAVA_EXPECTS(rows.width == m.hidden() && rows.rows() == static_cast<std::size_t>(total),
                   "{}: rows ({} x {}) must match the segments ({} rows, H {})", who, rows.rows(),
                   rows.width, total, m.hidden());
  DYNLLAVA_EXPECTS(rows.batch() == segments.batch(), "{}: rows hold {} sequences, the segments {}",
                   who, rows.batch(), segments.batch());
  for (std::size_t b = 0; b < segments.batch(); ++b) {
    DYNLLAVA_EXPECTS(rows.length(b) == segments.length(b) && rows.length(b) > 0,
                     "{}: sequence {} has {} rows, its segments {} (must be equal and > 0)", who, b,
                     rows.length(b), segments.length(b));
  }
  for (std::size_t b = 0; b < segments.batch(); ++b) {
    const segment& last = segments.segments[static_cast<std::size_t>(segments.indptr[b + 1] - 1)];
    DYNLLAVA_EXPECTS(last.kind != segment_kind::image,
                     "{}: sequence {} ends with an image token; its last row (whose logits are "
                     "returned) must be text or output",
                     who, b);
  }
  const bool fastv = o.vision == vision_rule::fastv && o.prune_images;
  const bool reuse = reuse_images != nullptr && !fastv && o.prune_images;
  std::vector<segment> fresh_segments;  // the segments with the reused images marked as text
  if (reuse) {
    const auto cands = cpu::candidate_rows(segments, segment_kind::image).indptr;
    DYNLLAVA_EXPECTS(reuse_images->batch() == segments.batch(),
                     "{}: the reused image selection covers {} sequences, the segments {}", who,
                     reuse_images->batch(), segments.batch());
    fresh_segments.assign(segments.segments.begin(), segments.segments.end());
    for (std::size_t b = 0; b < segments.batch(); ++b) {
      index_t covered = reuse_images->indptr[b + 1] - reuse_images->indptr[b];
      DYNLLAVA_EXPECTS(covered <= cands[b + 1] - cands[b],
                       "{}: the reused image selection covers {} image tokens of sequence {}, "
                       "which holds {}",
                       who, covered, b, cands[b + 1] - cands[b]);
      for (index_t i = segments.indptr[b]; i < segments.indptr[b + 1] && covered > 0; ++i) {
        segment& seg = fresh_segments[static_cast<std::size_t>(i)];
        if (seg.kind != segment_kind::image) continue;
        DYNLLAVA_EXPECTS(seg.length <= covered,
                         "{}: the reused image selection of sequence {} ends inside an image "
                         "segment",
                         who, b);
        covered -= seg.length;
        seg.kind = segment_kind::instruction;  // decided earlier: not a candidate now
      }
    }
  }
  const index_t H = m.hidden();
  const index_t l = o.sparse_layer;
  std::vector<float> h(rows.values.begin(), rows.values.end());
  std::vector<index_t> indptr(rows.indptr.begin(), rows.indptr.end()),
      pos(h.size() / static_cast<std::size_t>(H));
  for (std::size_t b = 0; b < rows.batch(); ++b) {
    for (index_t i = 0; i < rows.length(b); ++i) pos[static_cast<std::size_t>(indptr[b] + i)] = i;
  }
  // The keys and values the layers write (in the cache's element type) are not kept.
  std::vector<typename Cache::value_type> k(h.size()), v(h.size());
  const Cache* none = nullptr;
  const std::vector<index_t> nothing_cached;
  if (obs != nullptr) obs->begin_call(m.layers());
  std::vector<float> q(fastv ? h.size() : 0);
  count_rows(s, m.layers(), 0, l, pos.size());
  for (index_t layer = 0; layer < l; ++layer) {
    observe_layer(obs, layer, indptr, nothing_cached);
    const layer_probes probes{layer == l - 1 ? make_host_span(q) : host_span<float>{}, {}};
    run_layer(m, layer, {make_host_span(indptr), make_host_span(h), H},
              make_host_span(std::as_const(pos)), none, make_host_span(k), make_host_span(v),
              probes);
  }
  // Images: reused, or ranked by the predictor, or by FastV (the newest row's attention in
  // layer l - 1).
  host_selection image_kept;
  if (reuse) {
    // Earlier prompts' images keep their decisions; only images new since then are ranked.
    const segment_table<host_space> fresh{segments.indptr,
                                          make_host_span(std::as_const(fresh_segments))};
    token_decisions now;
    if (image_candidates(fresh) > 0) {
      select_images(image, h, fresh, o, s, obs, now);
    } else {
      now.indptr.assign(segments.batch() + 1, 0);
    }
    seen.images = token_decisions::concat_by_sequence(*reuse_images, now);
    image_kept = seen.images.kept();
    const auto& old = *reuse_images;
    s.image_tokens += static_cast<index_t>(old.candidates());
    s.image_kept += static_cast<index_t>(std::count(old.keep.begin(), old.keep.end(), 1));
  } else {
    image_kept = fastv ? select_images_fastv(m, image, q, k, indptr, segments, o, s, seen.images)
                       : select_images(image, h, segments, o, s, obs, seen.images);
  }
  // Output candidates: every generated token but the newest.
  const context_options pin{.pin_last_output = true};
  const auto cands = cpu::candidate_rows(segments, segment_kind::output, pin);
  host_selection out_kept;
  seen.outputs = token_decisions{};
  if (!o.gate_outputs) {
    out_kept = host_selection::keep_all(cands.indptr);
    seen.outputs.set_kept(cands.indptr, out_kept);
  } else {
    if (obs != nullptr) obs->output_predictor(cands.positions.size());
    out_kept = cpu::select_outputs(*output, make_host_span(std::as_const(h)), segments, o.rule,
                                   &seen.outputs);
  }
  s.output_tokens += static_cast<index_t>(cands.positions.size());
  s.output_kept += static_cast<index_t>(out_kept.positions.size());
  const std::vector<kind_selection> pruned{{segment_kind::image, image_kept.view()},
                                           {segment_kind::output, out_kept.view()}};
  const auto ctx = cpu::build_sparse_context(segments, make_host_span(pruned), pin);
  std::vector<float> hk;
  gather_context(h, H, ctx, hk);
  k.resize(hk.size());
  v.resize(hk.size());
  count_rows(s, m.layers(), l, m.layers(), ctx.rows.size());
  for (index_t layer = l; layer < m.layers(); ++layer) {
    observe_layer(obs, layer, ctx.indptr, nothing_cached);
    m.layer(host, layer, {make_host_span(ctx.indptr), make_host_span(hk), H},
            make_host_span(ctx.positions), none, make_host_span(k), make_host_span(v));
  }
  if (obs != nullptr) obs->end_call(segments.batch(), {});
  return last_logits(m, ctx.indptr, hk);
}

}  // namespace detail

/// @brief Decode without KV cache: recompute the whole sequence for one step (stateless; a
/// `no_cache_session` keeps the context and ranks each image once).
/// `rows` hold every sequence's full context (prompt rows, then the embeddings of the generated
/// tokens), described by `segments` (the generated tokens as `output` segments). Images are
/// pruned by top-k as in prefill, each turn's image on its own (by the image predictor, or with
/// `vision_rule::fastv` by the newest row's attention in layer `sparse_layer - 1`); output
/// tokens except the newest are gated by `options.rule`; the newest token is always kept.
/// A null predictor is an error wherever the options use it, as is a predictor of another width.
/// @param image a pointer to an `image_ranker` (a `two_way_predictor<host_t>`, or an
///        `attention_scorer<host_t>` that ranks with `vision_rule::fastv`), or `nullptr`
/// @param output a pointer to a `two_way_predictor<host_t>`, or `nullptr`
/// @param[out] stats optional: rows per layer and kept counts, added to when the call succeeds
///             (left as it was when it throws)
/// @param[out] kept_outputs optional: the kept positions among each sequence's output candidates
/// @param[in] observer optional: told of the step's work (e.g. a `trace_recorder`); a call that
///            throws may have told it of its start and of some layers
/// @return `[batch, vocab]` logits of each sequence's last row.
/// @tparam Cache a KV storage type the model's `layer` accepts (no cache is used: a null one is
///         passed); name it for a model that does not take `contiguous_kv_cache`.
template <class Model, kv_storage<host_t> Cache = no_cache_storage_t<Model>, image_argument PI,
          predictor_argument PO>
requires decoder<Model, host_t, Cache> std::vector<float> decode_without_cache(
    const Model& m, PI image, PO output, host_ragged_rows<const float> rows,
    segment_table<host_space> segments, const sparsifier_options& o, run_stats* stats = nullptr,
    host_selection* kept_outputs = nullptr, pipeline_observer* observer = nullptr) {
  using image_t = predictor_type_t<PI>;
  using output_t = predictor_type_t<PO>;
  run_stats work = stats != nullptr ? *stats : run_stats{};  // the caller's change on success
  detail::no_cache_seen seen;
  auto logits = detail::no_cache_step<Model, Cache>(
      m, static_cast<const image_t*>(image), static_cast<const output_t*>(output), rows, segments,
      o, work, observer, seen, nullptr, "decode_without_cache");
  if (stats != nullptr) *stats = std::move(work);
  if (kept_outputs) *kept_outputs = seen.outputs.kept();
  return logits;
}

}  // namespace dynllava
