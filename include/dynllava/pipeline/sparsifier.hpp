// SPDX-License-Identifier: Apache-2.0
/// @file sparsifier.hpp
/// @brief The Dynamic-LLaVA inference modes over any `decoder`, on the host: prefill with
/// vision pruning and decode with the online KV gate (`kv_session`), and decode without KV
/// cache with output-text sparsification (`decode_without_cache`). METHOD.md sections 2 and 4.
///
/// Layers `0 .. sparse_layer-1` always see the whole context; at `sparse_layer` the predictors
/// read the hidden states entering it and decide once for all layers above; kept rows keep
/// their original positions. Dropped tokens still advance the position counter.
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/cost/trace.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/h2o_scorer.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dynllava {

/// How decode without KV cache chooses the kept output tokens.
enum class output_rule : std::uint8_t {
  per_sequence_argmax,       ///< default: each token kept iff logit0 > logit1 (matches the KV mode)
  released_batch_max_topk,   ///< the released code: k = max over the batch of argmax keeps, then
                             ///< each sequence keeps its top-k by raw logit0 (drifts from KV mode)
};

/// What ranks the image tokens at the sparse layer.
enum class vision_rule : std::uint8_t {
  predictor,  ///< Dynamic-LLaVA: the image predictor's logit0 - logit1 on the hidden states
  fastv,      ///< FastV: attention of the last prompt token at layer `sparse_layer - 1`,
              ///< averaged over heads (paper setting: sparse_layer = K = 3, keep 0.25)
};

struct sparsifier_options {
  index_t sparse_layer = 2;        ///< METHOD.md: l = 2 (FastV: K = 3)
  vision_rule vision = vision_rule::predictor;
  double vision_keep_ratio = 0.2;  ///< image tokens kept: floor(n * ratio)
  bool prune_images = true;        ///< false: every image token is kept (dense vision)
  bool gate_outputs = true;        ///< false: every output token is kept (dense text)
  output_rule rule = output_rule::per_sequence_argmax;
};

/// What a run kept: for each layer, the query rows it computed and, in KV mode, the tokens held.
struct run_stats {
  std::vector<index_t> rows_per_layer;  ///< [layers] query rows computed, summed over calls
  index_t image_tokens = 0, image_kept = 0;
  index_t output_tokens = 0, output_kept = 0;
};

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

/// The image predictor's work: each sequence's image tokens, all pairs among them.
inline void trace_image_predictor(cost::trace& t, const host_selection& candidates) {
  for (std::size_t b = 0; b < candidates.batch(); ++b) {
    const std::int64_t n = candidates.indptr[b + 1] - candidates.indptr[b];
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

/// Image top-k at the sparse layer: the kept positions among each sequence's image tokens.
inline host_selection select_images(const image_predictor* pred, const std::vector<float>& hidden,
                                    index_t H, segment_table<host_space> t,
                                    const sparsifier_options& o, run_stats& stats, cost::trace& work) {
  const auto cands = cpu::candidate_rows(t, segment_kind::image);
  stats.image_tokens += static_cast<index_t>(cands.positions.size());
  host_selection kept;
  if (!o.prune_images || pred == nullptr) {
    kept = host_selection::keep_all(cands.indptr);
  } else {
    trace_image_predictor(work, cands);
    const auto rows = cpu::global_rows(cands, t);
    std::vector<float> x(rows.size() * static_cast<std::size_t>(H)), scores(rows.size());
    cpu::gather_rows(host_span<const float>(hidden.data(), hidden.size()), H, make_host_span(rows),
                     make_host_span(x));
    pred->score(host, {make_host_span(cands.indptr), make_host_span(std::as_const(x)), H},
                make_host_span(scores));
    kept = cpu::topk({make_host_span(cands.indptr), make_host_span(std::as_const(scores))},
                     keep_ratio(o.vision_keep_ratio));
  }
  stats.image_kept += static_cast<index_t>(kept.positions.size());
  return kept;
}

/// @brief FastV at the sparse layer: ranks each sequence's image tokens by the head-averaged
/// attention that the sequence's last row in the call pays them, from the queries `q` and keys
/// `k` (`[rows, H]`, ragged by `indptr`, RoPE applied) of the last full layer; keeps the top
/// `floor(n * vision_keep_ratio)`.
template <class Model>
host_selection select_images_fastv(const Model& m, const std::vector<float>& q,
                                   const std::vector<float>& k, const std::vector<index_t>& indptr,
                                   segment_table<host_space> segments, const sparsifier_options& o,
                                   run_stats& stats) {
  const index_t H = m.hidden();
  const auto Hs = static_cast<std::size_t>(H);
  const auto cands = cpu::candidate_rows(segments, segment_kind::image);
  stats.image_tokens += static_cast<index_t>(cands.positions.size());
  std::vector<float> queries;
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const auto last = static_cast<std::size_t>(indptr[b + 1] - 1);
    queries.insert(queries.end(), q.begin() + static_cast<std::ptrdiff_t>(last * Hs),
                   q.begin() + static_cast<std::ptrdiff_t>((last + 1) * Hs));
  }
  std::vector<float> scores(cands.positions.size());
  const fastv_scorer fastv{m.config().heads, m.config().head_dim()};
  fastv.score(host, make_host_span(std::as_const(queries)),
              {make_host_span(indptr), make_host_span(k), H}, cands.view(), make_host_span(scores));
  auto kept = cpu::topk({make_host_span(cands.indptr), make_host_span(std::as_const(scores))},
                        keep_ratio(o.vision_keep_ratio));
  stats.image_kept += static_cast<index_t>(kept.positions.size());
  return kept;
}

/// @throws dynllava::error when the options cannot run on a model of `layers` layers.
template <class Model, class Cache>
void check_options(const sparsifier_options& o, index_t layers, const char* who) {
  DYNLLAVA_EXPECTS(o.sparse_layer >= 0 && o.sparse_layer <= layers,
                   "{}: sparse_layer must be in [0, {}], got {}", who, layers, o.sparse_layer);
  if (o.vision == vision_rule::fastv) {
    DYNLLAVA_EXPECTS(o.sparse_layer >= 1,
                     "{}: vision_rule::fastv reads the attention of layer sparse_layer - 1, so "
                     "sparse_layer must be >= 1, got {}", who, o.sparse_layer);
    DYNLLAVA_EXPECTS((probing_decoder<Model, Cache>),
                     "{}: vision_rule::fastv needs a probing_decoder (one whose layer() takes "
                     "layer_probes to hand out its queries)", who);
  }
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

/// @brief A batch of conversations decoded with a KV cache: `prefill` once, then `decode` one
/// token per sequence per step. With `online_gate_policy` this is Dynamic-LLaVA's KV mode; with
/// `full_cache_policy` and no pruning it is the dense model. Baselines through the same driver:
/// FastV (`vision_rule::fastv`), H2O (`h2o_policy`), FastV + H2O (both), StreamingLLM
/// (`streaming_policy`).
///
/// Retention: after every call (prefill or decode step) each (layer, sequence) is cut to what
/// the policy retains. Policies that rank by scores (`kv_policy_needs_scores`, H2O) get, per
/// layer, the attention every held token has received so far (summed over heads and queries,
/// from the decoder's `layer_probes::key_attention`, accumulated by one `h2o_scorer` per layer).
template <class Model, kv_storage Cache, kv_policy Policy>
  requires decoder<Model, Cache>
class kv_session {
  static_assert(!kv_policy_needs_scores<Policy> || probing_decoder<Model, Cache>,
                "kv_session: a policy that ranks by attention (H2O) needs a probing_decoder");

 public:
  kv_session(const Model& model, Cache& cache, Policy policy, const image_predictor* image,
             const output_predictor* output, sparsifier_options options = {})
      : m_(model), cache_(cache), policy_(policy), image_(image), output_(output), o_(options),
        next_pos_(cache.batch(), 0) {
    detail::check_options<Model, Cache>(o_, model.layers(), "kv_session");
    DYNLLAVA_EXPECTS(cache.layers() == model.layers() && cache.width() == model.hidden(),
                     "kv_session: the cache ({} layers, width {}) does not fit the model ({} layers, H {})",
                     cache.layers(), cache.width(), model.layers(), model.hidden());
    if constexpr (kv_policy_needs_scores<Policy>) {
      for (index_t l = 0; l < model.layers(); ++l) {
        attention_.emplace_back(cache.batch());
        for (std::size_t b = 0; b < cache.batch(); ++b) {
          DYNLLAVA_EXPECTS(cache.length(l, b) == 0,
                           "kv_session: a policy that ranks by attention needs an empty cache "
                           "(layer {}, sequence {} holds {} tokens)", l, b, cache.length(l, b));
        }
      }
    }
  }

  /// @brief Runs the prompts (first turn): rows `[rows, H]` ragged per sequence, described by
  /// `segments`; image tokens are pruned at the sparse layer; everything kept is cached.
  /// @return `[batch, vocab]` logits of each sequence's last prompt row.
  /// @throws dynllava::error when shapes disagree or a prompt ends with an image token.
  std::vector<float> prefill(host_ragged_rows<const float> rows, segment_table<host_space> segments) {
    const index_t total = validate(segments, "kv_session::prefill: segments");
    validate(rows, "kv_session::prefill: rows");
    DYNLLAVA_EXPECTS(rows.width == m_.hidden() && rows.rows() == static_cast<std::size_t>(total) &&
                         rows.batch() == cache_.batch(),
                     "kv_session::prefill: rows ({} x {}, {} sequences) must match the segments ({} "
                     "rows) and the cache ({} sequences)", rows.rows(), rows.width, rows.batch(),
                     total, cache_.batch());
    for (std::size_t b = 0; b < segments.batch(); ++b) {
      DYNLLAVA_EXPECTS(segments.length(b) > 0 && segments.segments[static_cast<std::size_t>(segments.indptr[b + 1] - 1)].kind != segment_kind::image,
                       "kv_session::prefill: prompt {} must be non-empty and end with text", b);
      DYNLLAVA_EXPECTS(rows.length(b) == segments.length(b), "kv_session::prefill: sequence {} has {} rows, its segments {}",
                       b, rows.length(b), segments.length(b));
    }
    const index_t H = m_.hidden();
    std::vector<float> h(rows.values.begin(), rows.values.end());
    std::vector<index_t> indptr(rows.indptr.begin(), rows.indptr.end()), pos(h.size() / static_cast<std::size_t>(H));
    for (std::size_t b = 0; b < rows.batch(); ++b) {
      for (index_t i = 0; i < rows.length(b); ++i) pos[static_cast<std::size_t>(indptr[b] + i)] = next_pos_[b] + i;
    }
    const index_t l = o_.sparse_layer;
    begin_trace();
    if (o_.vision == vision_rule::fastv && o_.prune_images && l > 0) {
      // FastV: the last full layer also hands out its queries and keys.
      std::vector<float> q, k;
      run(0, l, indptr, h, pos, std::vector<std::uint8_t>(pos.size(), 1), &q, &k);
      check_fastv_context(indptr, segments);
      image_kept_ = detail::select_images_fastv(m_, q, k, indptr, segments, o_, stats_);
    } else {
      run(0, l, indptr, h, pos, std::vector<std::uint8_t>(pos.size(), 1));
      // Vision pruning at the sparse layer.
      image_kept_ = detail::select_images(image_, h, H, segments, o_, stats_, traces_.back());
    }
    const std::vector<kind_selection> pruned{{segment_kind::image, image_kept_.view()}};
    std::vector<index_t> offsets(next_pos_.begin(), next_pos_.end());
    const auto ctx = cpu::build_sparse_context(segments, make_host_span(std::as_const(pruned)),
                                               {.position_offsets = make_host_span(std::as_const(offsets))});
    std::vector<float> hk;
    detail::gather_context(h, H, ctx, hk);
    run(l, m_.layers(), ctx.indptr, hk, ctx.positions, std::vector<std::uint8_t>(ctx.rows.size(), 1));
    for (std::size_t b = 0; b < rows.batch(); ++b) next_pos_[b] += rows.length(b);
    retain();
    end_trace();
    return last_logits(ctx.indptr, hk);
  }

  /// @brief One decode step: `tokens[b]` is sequence `b`'s newest token. At the sparse layer the
  /// output predictor decides keep (`logit0 > logit1`); the token attends to the cache and to
  /// itself in every layer, and enters a layer's cache iff `policy.admits(layer, keep)`.
  /// @return `[batch, vocab]` logits.
  std::vector<float> decode(host_span<const std::int32_t> tokens) {
    DYNLLAVA_EXPECTS(tokens.size() == cache_.batch(), "kv_session::decode: one token per sequence ({}), got {}",
                     cache_.batch(), tokens.size());
    const index_t H = m_.hidden();
    const std::size_t n = tokens.size();
    std::vector<float> h(n * static_cast<std::size_t>(H));
    m_.embed(tokens, make_host_span(h));
    std::vector<index_t> indptr(n + 1), pos(n);
    for (std::size_t b = 0; b < n; ++b) {
      indptr[b + 1] = static_cast<index_t>(b + 1);
      pos[b] = next_pos_[b]++;
    }
    const index_t l = o_.sparse_layer;
    begin_trace();
    run(0, l, indptr, h, pos, std::vector<std::uint8_t>(n, 1));
    std::vector<std::uint8_t> keep(n, 1);
    if (o_.gate_outputs && output_ != nullptr && l < m_.layers()) {
      traces_.back().output_tokens_scored += static_cast<std::int64_t>(n);
      std::vector<float> logits(2 * n);
      output_->logits(host, {make_host_span(std::as_const(indptr)), make_host_span(std::as_const(h)), H},
                      make_host_span(logits));
      cpu::argmax_gate({make_host_span(std::as_const(indptr)), make_host_span(std::as_const(logits))},
                       make_host_span(keep));
    }
    stats_.output_tokens += static_cast<index_t>(n);
    for (auto k : keep) stats_.output_kept += k;
    decisions_.insert(decisions_.end(), keep.begin(), keep.end());
    run(l, m_.layers(), indptr, h, pos, keep);
    retain();
    end_trace();
    return last_logits(indptr, h);
  }

  /// Kept positions among each sequence's image tokens (after `prefill`).
  const host_selection& image_kept() const noexcept { return image_kept_; }
  /// Keep decisions of every decoded token, step-major (`[steps * batch]`).
  const std::vector<std::uint8_t>& decisions() const noexcept { return decisions_; }
  const run_stats& stats() const noexcept { return stats_; }
  /// @brief The work of every call so far (prefill, then one per decode step), summed over the
  /// batch, in the cost model's terms: per layer the query rows, the (query, key) pairs and the
  /// tokens cached afterwards; the predictors' tokens; the logit rows. `cost::exact_flops` and
  /// `cost::kv_cache_bytes` turn a trace into FLOPs and bytes.
  const std::vector<cost::trace>& traces() const noexcept { return traces_; }

 private:
  /// After every call: each (layer, sequence) keeps what the policy retains; score-based
  /// policies rank by the attention accumulated in `attention_[layer]`.
  void retain() {
    std::vector<float> scores;
    std::vector<index_t> kept, kept_indptr, kept_all;
    for (index_t layer = 0; layer < m_.layers(); ++layer) {
      if constexpr (kv_policy_needs_scores<Policy>) {
        auto& acc = attention_[static_cast<std::size_t>(layer)];
        scores.resize(static_cast<std::size_t>(held_tokens(cache_, layer)));
        acc.scores(host, make_host_span(scores));
        kept_indptr.assign(1, 0);
        kept_all.clear();
        std::size_t first = 0;
        for (std::size_t b = 0; b < cache_.batch(); ++b) {
          const auto held = static_cast<std::size_t>(cache_.length(layer, b));
          cpu::enforce_retention(cache_, policy_, layer, b,
                                 host_span<const float>(scores.data() + first, held), &kept);
          first += held;
          kept_all.insert(kept_all.end(), kept.begin(), kept.end());
          kept_indptr.push_back(static_cast<index_t>(kept_all.size()));
        }
        acc.retain(host, {make_host_span(std::as_const(kept_indptr)), make_host_span(std::as_const(kept_all))});
      } else {
        for (std::size_t b = 0; b < cache_.batch(); ++b) cpu::enforce_retention(cache_, policy_, layer, b);
      }
    }
  }

  void begin_trace() {
    traces_.emplace_back();
    traces_.back().layers.resize(static_cast<std::size_t>(m_.layers()));
  }
  void end_trace() {
    auto& t = traces_.back();
    for (index_t layer = 0; layer < m_.layers(); ++layer) {
      t.layers[static_cast<std::size_t>(layer)].kv_tokens = held_tokens(cache_, layer);
    }
    t.logit_rows += static_cast<std::int64_t>(cache_.batch());
  }

  /// FastV ranks image tokens within the call that brings them (its softmax is over the call's
  /// keys), so a sequence with an image must have nothing cached before it.
  void check_fastv_context(const std::vector<index_t>& indptr, segment_table<host_space> segments) const {
    const auto cands = cpu::candidate_rows(segments, segment_kind::image);
    for (std::size_t b = 0; b < cache_.batch(); ++b) {
      DYNLLAVA_EXPECTS(cands.indptr[b + 1] == cands.indptr[b] ||
                           cache_.length(o_.sparse_layer - 1, b) == rows_in_call(indptr, b),
                       "kv_session: FastV ranks image tokens within the prompt that holds them; "
                       "sequence {} brings an image after earlier turns", b);
    }
  }
  static index_t rows_in_call(const std::vector<index_t>& indptr, std::size_t b) {
    return indptr[b + 1] - indptr[b];
  }

  /// Layers [from, to) on `h` (ragged by `indptr`), appending K/V under the policy (and, for
  /// score-based policies, the attention each cached token received). With `q_last`/`k_last`
  /// the last layer's queries and keys are handed out (FastV).
  void run(index_t from, index_t to, const std::vector<index_t>& indptr, std::vector<float>& h,
           const std::vector<index_t>& pos, const std::vector<std::uint8_t>& keep,
           std::vector<float>* q_last = nullptr, std::vector<float>* k_last = nullptr) {
    const index_t H = m_.hidden();
    std::vector<float> k(h.size()), v(h.size()), mass;
    if (q_last != nullptr) q_last->assign(h.size(), 0.0f);
    detail::count_rows(stats_, m_.layers(), from, to, pos.size());
    std::vector<index_t> cached(cache_.batch());
    for (index_t layer = from; layer < to; ++layer) {
      for (std::size_t b = 0; b < cache_.batch(); ++b) cached[b] = cache_.length(layer, b);
      detail::trace_layer(traces_.back().layers[static_cast<std::size_t>(layer)], indptr, cached);
      layer_probes probes;
      if (q_last != nullptr && layer == to - 1) probes.queries = make_host_span(*q_last);
      if constexpr (kv_policy_needs_scores<Policy>) {
        mass.resize(key_attention_size(make_host_span(indptr), make_host_span(std::as_const(cached))));
        probes.key_attention = make_host_span(mass);
      }
      detail::run_layer(m_, layer, {make_host_span(indptr), make_host_span(h), H}, make_host_span(pos),
                        static_cast<const Cache*>(&cache_), make_host_span(k), make_host_span(v), probes);
      if (!probes.queries.empty() && k_last != nullptr) *k_last = k;
      cpu::gated_append(cache_, policy_, layer, make_host_span(indptr), make_host_span(std::as_const(k)),
                        make_host_span(std::as_const(v)), make_host_span(keep), make_host_span(pos));
      if constexpr (kv_policy_needs_scores<Policy>) track_attention(layer, indptr, cached, keep, mass);
    }
  }

  /// Keeps `attention_[layer]` in step with the layer's cache: the admitted new tokens start
  /// being tracked, and every tracked token adds the attention it received in this call.
  void track_attention(index_t layer, const std::vector<index_t>& indptr,
                       const std::vector<index_t>& cached, const std::vector<std::uint8_t>& keep,
                       const std::vector<float>& mass) {
    auto& acc = attention_[static_cast<std::size_t>(layer)];
    std::vector<index_t> added(cache_.batch()), block_indptr{0};
    std::vector<float> block;
    std::size_t first = 0;
    for (std::size_t b = 0; b < cache_.batch(); ++b) {
      DYNLLAVA_EXPECTS(acc.tracked(b) == cached[b],
                       "kv_session: layer {} sequence {} holds {} tokens but {} are tracked (was "
                       "the cache changed outside the session?)", layer, b, cached[b], acc.tracked(b));
      block.insert(block.end(), mass.begin() + static_cast<std::ptrdiff_t>(first),
                   mass.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(cached[b])));
      first += static_cast<std::size_t>(cached[b]);
      for (index_t r = indptr[b]; r < indptr[b + 1]; ++r, ++first) {
        if (!policy_.admits(layer, keep[static_cast<std::size_t>(r)] != 0)) continue;
        block.push_back(mass[first]);
        ++added[b];
      }
      block_indptr.push_back(static_cast<index_t>(block.size()));
    }
    acc.append(host, make_host_span(std::as_const(added)));
    acc.accumulate(host, {make_host_span(std::as_const(block_indptr)), make_host_span(std::as_const(block))});
  }

  std::vector<float> last_logits(const std::vector<index_t>& indptr, const std::vector<float>& h) const {
    const auto H = static_cast<std::size_t>(m_.hidden());
    std::vector<float> last;
    for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
      const auto r = static_cast<std::size_t>(indptr[b + 1] - 1);
      last.insert(last.end(), h.begin() + static_cast<std::ptrdiff_t>(r * H),
                  h.begin() + static_cast<std::ptrdiff_t>((r + 1) * H));
    }
    std::vector<float> out(last.size() / H * static_cast<std::size_t>(vocab()));
    m_.logits(make_host_span(std::as_const(last)), make_host_span(out));
    return out;
  }
  index_t vocab() const { return m_.config().vocab; }

  const Model& m_;
  Cache& cache_;
  Policy policy_;
  const image_predictor* image_;
  const output_predictor* output_;
  sparsifier_options o_;
  std::vector<index_t> next_pos_;
  host_selection image_kept_;
  std::vector<std::uint8_t> decisions_;
  run_stats stats_;
  std::vector<cost::trace> traces_;
  std::vector<h2o_scorer> attention_;  ///< [layers], only for score-based policies
};

/// @brief Decode without KV cache: recompute the whole sequence for one step.
/// `rows` hold every sequence's full context (prompt rows, then the embeddings of the generated
/// tokens), described by `segments` (the generated tokens as `output` segments). Images are
/// pruned by top-k as in prefill; output tokens except the newest are gated by `options.rule`;
/// the newest token is always kept.
/// @param[out] kept_outputs optional: the kept positions among each sequence's output candidates
/// @return `[batch, vocab]` logits of each sequence's last row.
template <class Model>
  requires decoder<Model, contiguous_kv_cache>
std::vector<float> decode_without_cache(const Model& m, const image_predictor* image,
                                        const output_predictor* output,
                                        host_ragged_rows<const float> rows,
                                        segment_table<host_space> segments,
                                        const sparsifier_options& o, run_stats* stats = nullptr,
                                        host_selection* kept_outputs = nullptr,
                                        cost::trace* work = nullptr) {
  detail::check_options<Model, contiguous_kv_cache>(o, m.layers(), "decode_without_cache");
  const index_t total = validate(segments, "decode_without_cache: segments");
  validate(rows, "decode_without_cache: rows");
  DYNLLAVA_EXPECTS(rows.width == m.hidden() && rows.rows() == static_cast<std::size_t>(total),
                   "decode_without_cache: rows ({} x {}) must match the segments ({} rows, H {})",
                   rows.rows(), rows.width, total, m.hidden());
  run_stats local;
  run_stats& s = stats ? *stats : local;
  const index_t H = m.hidden();
  const index_t l = std::min(o.sparse_layer, m.layers());
  std::vector<float> h(rows.values.begin(), rows.values.end());
  std::vector<index_t> indptr(rows.indptr.begin(), rows.indptr.end()), pos(h.size() / static_cast<std::size_t>(H));
  for (std::size_t b = 0; b < rows.batch(); ++b) {
    for (index_t i = 0; i < rows.length(b); ++i) pos[static_cast<std::size_t>(indptr[b] + i)] = i;
  }
  std::vector<float> k(h.size()), v(h.size());
  const contiguous_kv_cache* none = nullptr;
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
                                : detail::select_images(image, h, H, segments, o, s, tr);
  // Output candidates: every generated token but the newest.
  const context_options pin{.pin_last_output = true};
  const auto cands = cpu::candidate_rows(segments, segment_kind::output, pin);
  host_selection out_kept;
  out_kept.indptr.assign(cands.indptr.size(), 0);
  if (!o.gate_outputs || output == nullptr) {
    out_kept = host_selection::keep_all(cands.indptr);
  } else {
    const auto grows = cpu::global_rows(cands, segments);
    tr.output_tokens_scored += static_cast<std::int64_t>(grows.size());
    std::vector<float> x(grows.size() * static_cast<std::size_t>(H)), logits(2 * grows.size());
    cpu::gather_rows(host_span<const float>(h.data(), h.size()), H, make_host_span(grows), make_host_span(x));
    output->logits(host, {make_host_span(cands.indptr), make_host_span(std::as_const(x)), H}, make_host_span(logits));
    const ragged_logits<host_space> lg{make_host_span(cands.indptr), make_host_span(std::as_const(logits))};
    out_kept.positions.resize(grows.size());
    if (o.rule == output_rule::per_sequence_argmax) {
      out_kept.positions.resize(static_cast<std::size_t>(
          logit_argmax{}.select(host, lg, make_host_span(out_kept.indptr), make_host_span(out_kept.positions))));
    } else {
      std::vector<std::uint8_t> keep(grows.size());
      cpu::argmax_gate(lg, make_host_span(keep));
      index_t kmax = 0;
      for (std::size_t b = 0; b < cands.batch(); ++b) {
        kmax = std::max<index_t>(kmax, static_cast<index_t>(std::count(keep.begin() + cands.indptr[b], keep.begin() + cands.indptr[b + 1], 1)));
      }
      std::vector<float> logit0(grows.size());
      std::vector<index_t> ks(cands.batch());
      for (std::size_t i = 0; i < grows.size(); ++i) logit0[i] = logits[2 * i];
      for (std::size_t b = 0; b < cands.batch(); ++b) ks[b] = std::min(kmax, cands.indptr[b + 1] - cands.indptr[b]);
      out_kept = cpu::topk({make_host_span(cands.indptr), make_host_span(std::as_const(logit0))},
                           topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(ks))));
    }
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
  std::vector<float> last;
  for (std::size_t b = 0; b + 1 < ctx.indptr.size(); ++b) {
    const auto r = static_cast<std::size_t>(ctx.indptr[b + 1] - 1);
    last.insert(last.end(), hk.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(H)),
                hk.begin() + static_cast<std::ptrdiff_t>((r + 1) * static_cast<std::size_t>(H)));
  }
  std::vector<float> out(last.size() / static_cast<std::size_t>(H) * static_cast<std::size_t>(m.config().vocab));
  m.logits(make_host_span(std::as_const(last)), make_host_span(out));
  return out;
}

}  // namespace dynllava
