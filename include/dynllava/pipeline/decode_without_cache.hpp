// SPDX-License-Identifier: Apache-2.0
/// @file decode_without_cache.hpp
/// @brief Decoding without KV cache: each step recomputes the context with the image top-k and
/// output-text sparsification (METHOD.md sections 2 and 4).
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/cost/trace.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/detail/steps.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>

#include <cstdint>
#include <vector>

namespace dynllava {

/// @brief Decode without KV cache: recompute the whole sequence for one step.
/// `rows` hold every sequence's full context (prompt rows, then the embeddings of the generated
/// tokens), described by `segments` (the generated tokens as `output` segments). Images are
/// pruned by top-k as in prefill, each turn's image on its own (by the image predictor, or with
/// `vision_rule::fastv` by the newest row's attention in layer `sparse_layer - 1`); output
/// tokens except the newest are gated by `options.rule`; the newest token is always kept.
/// A null predictor is an error wherever the options use it.
/// @param[out] stats optional: rows per layer and kept counts, added to
/// @param[out] work optional: this step's work in the cost model's terms (overwritten)
/// @param[out] kept_outputs optional: the kept positions among each sequence's output candidates
/// @return `[batch, vocab]` logits of each sequence's last row.
/// @tparam Cache a KV storage type the model's `layer` accepts (no cache is used: a null one is
///         passed); name it for a model that does not take `contiguous_kv_cache`.
template <class Model, kv_storage Cache = contiguous_kv_cache>
  requires decoder<Model, Cache>
std::vector<float> decode_without_cache(const Model& m, const image_predictor* image,
                                        const output_predictor* output,
                                        host_ragged_rows<const float> rows,
                                        segment_table<host_space> segments,
                                        const sparsifier_options& o, run_stats* stats = nullptr,
                                        host_selection* kept_outputs = nullptr,
                                        cost::trace* work = nullptr) {
  detail::check_options<Model, Cache>(o, m.layers(), image, output, "decode_without_cache");
  const index_t total = validate(segments, "decode_without_cache: segments");
  validate(rows, "decode_without_cache: rows");
  DYNLLAVA_EXPECTS(rows.width == m.hidden() && rows.rows() == static_cast<std::size_t>(total),
                   "decode_without_cache: rows ({} x {}) must match the segments ({} rows, H {})",
                   rows.rows(), rows.width, total, m.hidden());
  DYNLLAVA_EXPECTS(rows.batch() == segments.batch(),
                   "decode_without_cache: rows hold {} sequences, the segments {}", rows.batch(),
                   segments.batch());
  for (std::size_t b = 0; b < segments.batch(); ++b) {
    DYNLLAVA_EXPECTS(rows.length(b) == segments.length(b) && rows.length(b) > 0,
                     "decode_without_cache: sequence {} has {} rows, its segments {} (must be "
                     "equal and > 0)", b, rows.length(b), segments.length(b));
  }
  run_stats local;
  run_stats& s = stats ? *stats : local;
  const index_t H = m.hidden();
  const index_t l = o.sparse_layer;
  std::vector<float> h(rows.values.begin(), rows.values.end());
  std::vector<index_t> indptr(rows.indptr.begin(), rows.indptr.end()), pos(h.size() / static_cast<std::size_t>(H));
  for (std::size_t b = 0; b < rows.batch(); ++b) {
    for (index_t i = 0; i < rows.length(b); ++i) pos[static_cast<std::size_t>(indptr[b] + i)] = i;
  }
  std::vector<float> k(h.size()), v(h.size());
  const Cache* none = nullptr;
  cost::trace local_trace;
  cost::trace& tr = work ? *work : local_trace;
  tr = cost::trace{};
  tr.layers.resize(static_cast<std::size_t>(m.layers()));
  const bool fastv = o.vision == vision_rule::fastv && o.prune_images;
  std::vector<float> q(fastv ? h.size() : 0);
  detail::count_rows(s, m.layers(), 0, l, pos.size());
  for (index_t layer = 0; layer < l; ++layer) {
    detail::trace_layer(tr.layers[static_cast<std::size_t>(layer)], indptr, {});
    const layer_probes probes{layer == l - 1 ? make_host_span(q) : host_span<float>{}, {}};
    detail::run_layer(m, layer, {make_host_span(indptr), make_host_span(h), H}, make_host_span(std::as_const(pos)),
                      none, make_host_span(k), make_host_span(v), probes);
  }
  // FastV: ranked by the newest row's attention in layer l - 1 (its queries and keys).
  const auto image_kept = fastv ? detail::select_images_fastv(m, q, k, indptr, segments, o, s)
                                : detail::select_images(image, h, segments, o, s, tr);
  // Output candidates: every generated token but the newest.
  const context_options pin{.pin_last_output = true};
  const auto cands = cpu::candidate_rows(segments, segment_kind::output, pin);
  host_selection out_kept;
  if (!o.gate_outputs) {
    out_kept = host_selection::keep_all(cands.indptr);
  } else {
    tr.output_tokens_scored += static_cast<std::int64_t>(cands.positions.size());
    out_kept = cpu::select_outputs(*output, make_host_span(std::as_const(h)), segments, o.rule);
  }
  s.output_tokens += static_cast<index_t>(cands.positions.size());
  s.output_kept += static_cast<index_t>(out_kept.positions.size());
  const std::vector<kind_selection> pruned{{segment_kind::image, image_kept.view()},
                                           {segment_kind::output, out_kept.view()}};
  const auto ctx = cpu::build_sparse_context(segments, make_host_span(pruned), pin);
  std::vector<float> hk;
  detail::gather_context(h, H, ctx, hk);
  k.resize(hk.size());
  v.resize(hk.size());
  detail::count_rows(s, m.layers(), l, m.layers(), ctx.rows.size());
  for (index_t layer = l; layer < m.layers(); ++layer) {
    detail::trace_layer(tr.layers[static_cast<std::size_t>(layer)], ctx.indptr, {});
    m.layer(layer, {make_host_span(ctx.indptr), make_host_span(hk), H}, make_host_span(ctx.positions), none,
            make_host_span(k), make_host_span(v));
  }
  tr.logit_rows += static_cast<std::int64_t>(segments.batch());
  if (kept_outputs) *kept_outputs = out_kept;
  return detail::last_logits(m, ctx.indptr, hk);
}

}  // namespace dynllava
