// SPDX-License-Identifier: Apache-2.0
/// @file kv_session.hpp
/// @brief Decoding with a KV cache: `prefill` with vision pruning, `decode` with the online gate,
/// and the retention policies (METHOD.md sections 2 and 4).
#pragma once

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/pipeline/decode_step.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/detail/steps.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/image_ranker.hpp>
#include <dynllava/pipeline/no_predictor.hpp>
#include <dynllava/pipeline/pipeline_observer.hpp>
#include <dynllava/pipeline/run_layers.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/pipeline/token_decisions.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/h2o_scorer.hpp>
#include <dynllava/score/layer_attention.hpp>
#include <dynllava/select/gate.hpp>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <limits>
#include <vector>

namespace dynllava {

/// @brief The stateful scorer that accumulates the evidence a score-ranking policy
/// (`kv_policy_needs_scores<P>`) ranks held tokens by, one per layer in a `kv_session`:
/// `P::scorer_type` when the policy names one (an engine's own accumulator, a
/// `stateful_token_scorer<S, host_t>` fed each call's attention per key), else `h2o_scorer`.
template <class P>
struct session_scorer {
  using type = h2o_scorer;
};
template <class P>
requires requires { typename P::scorer_type; }
struct session_scorer<P> {
  using type = typename P::scorer_type;
};
template <class P>
using session_scorer_t = typename session_scorer<P>::type;

/// @brief A batch of conversations decoded with a KV cache: `prefill` once, then `decode` one
/// token per sequence per step. With `online_gate_policy` this is Dynamic-LLaVA's KV mode; with
/// `full_cache_policy` and no pruning it is the dense model. Baselines through the same driver:
/// FastV (`vision_rule::fastv`), H2O (`h2o_policy`), FastV + H2O (both), StreamingLLM
/// (`streaming_policy`).
///
/// Retention: after every call (prefill or decode step) each (layer, sequence) is cut to what
/// the policy retains. Policies that rank by scores (`kv_policy_needs_scores`, H2O) get, per
/// layer, the attention every held token has received so far (summed over heads and queries,
/// from the decoder's `layer_probes::key_attention`, accumulated per layer by the policy's
/// `session_scorer_t`: `h2o_scorer` unless the policy names its own `scorer_type`).
///
/// The batch moves together: every `prefill` call gives each sequence a non-empty prompt (system,
/// image and instruction segments; generated tokens go through `decode`), every `decode` step
/// one token per sequence. With the output gate on, the policy must drop gated-out tokens in
/// every layer from `sparse_layer` (`online_gate_policy{sparse_layer}`); policies that ignore
/// the gate (full cache, H2O, StreamingLLM) run with `gate_outputs = false`.
///
/// Its decode step is `decode_step(host, ...)` and its prefill runs its layers through
/// `run_layers` / `retain_layers` (the KV mode written once for every tag; `decode_step` with
/// `cuda::on_stream` is the CUDA step), adding host hooks for the observer and H2O.
///
/// Seams: any `decoder<Model, host_t, Cache>` (a `probing_decoder` for FastV and H2O), any
/// `kv_storage<Cache, host_t>` and `kv_policy<Policy, host_t>` (the session appends and evicts a
/// whole layer at a time through their layer-level calls: `dynllava::gated_append`,
/// `dynllava::enforce_retention`), any `two_way_predictor` as image and output predictor
/// (`nullptr` for none: class template argument deduction makes it `no_predictor`), and in the
/// image slot also any `attention_scorer<S, host_t>`, which ranks with `vision_rule::fastv`
/// instead of the bundled `fastv_scorer` (`image_ranker`).
///
/// After each call the decisions are readable: `image_decisions()` (the last prompt's image
/// logits, margins and kept tokens), `gate_decisions()` (the last step's gate logits, margins and
/// keep flags), `cache_lengths()` and `bytes_held()`. The work is reported to an optional
/// `pipeline_observer` (`observe`), e.g. a `trace_recorder` for the cost model.
///
/// Errors: bad arguments throw `dynllava::error` before anything changes (shapes, predictor
/// widths, a policy that disagrees with the options, an output rule of the no-cache mode,
/// `decode` before `prefill`). A call that fails
/// before its first append reached the cache (a full cache refuses the first layer's append; the
/// decoder or a predictor throws in the layers below) changes nothing either: the session stays
/// usable (an observer may have been told of the failed call's start and of its first layers). A
/// call that fails later (the paged cache runs out of pages in a later layer) leaves the session
/// and its cache valid but in an unspecified state (some layers appended): every later `prefill` or
/// `decode` then throws, saying so; discard both.
template <class Model, kv_storage<host_t> Cache, kv_policy<host_t> Policy,
          image_ranker<host_t> ImagePredictor, two_way_predictor<host_t> OutputPredictor>
requires decoder<Model, host_t, Cache>
class kv_session {
  static_assert(!kv_policy_needs_scores<Policy> || probing_decoder<Model, host_t, Cache>,
                "kv_session: a policy that ranks by attention (H2O) needs a probing_decoder");
  static_assert(std::same_as<typename Cache::value_type, float>,
                "kv_session: the decoder's keys and values are fp32; the cache must store fp32");

 public:
  /// @param image, output the predictors (not owned, must outlive the session), or null where
  ///        the options do not use them
  /// @param cache empty (nothing ever appended); the session fills it
  /// @throws dynllava::error on options, widths, a policy or a cache that do not fit (nothing
  ///         changes)
  kv_session(const Model& model, Cache& cache, Policy policy, const ImagePredictor* image,
             const OutputPredictor* output, sparsifier_options options = {})
      : m_(model),
        cache_(cache),
        policy_(policy),
        image_(image),
        output_(output),
        o_(options),
        next_pos_(cache.batch(), 0) {
    detail::check_options<Model, Cache>(o_, model.layers(), model.hidden(), image, output,
                                        "kv_session");
    DYNLLAVA_EXPECTS(o_.rule == output_rule::per_sequence_argmax,
                     "kv_session: output_rule::released_batch_max_topk chooses generated tokens "
                     "when decoding without a KV cache; with a cache the online gate decides each "
                     "token once (output_rule::per_sequence_argmax)");
    o_ = detail::runnable_options(o_, model.layers());
    DYNLLAVA_EXPECTS(
        cache.layers() == model.layers() && cache.width() == model.hidden(),
        "kv_session: the cache ({} layers, width {}) does not fit the model ({} layers, H {})",
        cache.layers(), cache.width(), model.layers(), model.hidden());
    if constexpr (requires { policy.validate(); }) policy_.validate();
    // The options' sparse layer and the policy's gate must agree: layers below it cache every
    // token; with the output gate on, every layer at or above it caches only kept tokens, and
    // with it off the gate has no say (full cache, H2O, StreamingLLM).
    detail::check_gate_policy(policy_, model.layers(), o_.sparse_layer,
                              o_.gate_outputs && o_.sparse_layer < model.layers(), "kv_session",
                              "gate_outputs is on", "gate_outputs = false");
    // The session numbers positions from 0 and tracks what it cached: it starts from an empty
    // cache (a used one would repeat positions and, for H2O, hold untracked tokens).
    for (index_t l = 0; l < model.layers(); ++l) {
      const auto held = cache.lengths(l);
      const auto appended = cache.appended_counts(l);
      for (std::size_t b = 0; b < cache.batch(); ++b) {
        DYNLLAVA_EXPECTS(
            appended[b] == 0,
            "kv_session: a session needs an empty cache (layer {}, sequence {} holds {} "
            "tokens); {} were appended",
            l, b, held[b], appended[b]);
      }
    }
    if constexpr (kv_policy_needs_scores<Policy>) {
      attention_ = layer_attention<session_scorer_t<Policy>>(model.layers(), cache.batch());
    }
  }

  /// @brief Runs a prompt per sequence: the first turn, or a later user turn appended after the
  /// cached conversation (positions continue). Rows `[rows, H]` ragged per sequence, described
  /// by `segments` (positions local to this call); image tokens are pruned at the sparse layer
  /// (each turn's image on its own); everything else is kept and cached.
  /// @return `[batch, vocab]` logits of each sequence's last prompt row.
  /// @throws dynllava::error when shapes disagree or a prompt ends with an image token.
  std::vector<float> prefill(host_ragged_rows<const float> rows,
                             segment_table<host_space> segments) {
    check_usable("prefill");
    const index_t total = validate(segments, "kv_session::prefill: segments");
    validate(rows, "kv_session::prefill: rows");
    DYNLLAVA_EXPECTS(
        rows.width == m_.hidden() && rows.rows() == static_cast<std::size_t>(total) &&
            rows.batch() == cache_.batch() && segments.batch() == cache_.batch(),
        "kv_session::prefill: rows ({} x {}, {} sequences) must match the segments ({} "
        "rows, {} sequences) and the cache ({} sequences)",
        rows.rows(), rows.width, rows.batch(), total, segments.batch(), cache_.batch());
    for (const segment& seg : segments.segments) {
      DYNLLAVA_EXPECTS(
          seg.kind != segment_kind::output,
          "kv_session::prefill: a prompt holds system, image and instruction segments; "
          "generated tokens go through decode() (they are gated there)");
    }
    for (std::size_t b = 0; b < segments.batch(); ++b) {
      DYNLLAVA_EXPECTS(
          segments.length(b) > 0 &&
              segments.segments[static_cast<std::size_t>(segments.indptr[b + 1] - 1)].kind !=
                  segment_kind::image,
          "kv_session::prefill: prompt {} must be non-empty and end with text", b);
      DYNLLAVA_EXPECTS(rows.length(b) == segments.length(b),
                       "kv_session::prefill: sequence {} has {} rows, its segments {}", b,
                       rows.length(b), segments.length(b));
    }
    const index_t H = m_.hidden();
    std::vector<float> h(rows.values.begin(), rows.values.end());
    std::vector<index_t> indptr(rows.indptr.begin(), rows.indptr.end()),
        pos(h.size() / static_cast<std::size_t>(H));
    for (std::size_t b = 0; b < rows.batch(); ++b) {
      for (index_t i = 0; i < rows.length(b); ++i)
        pos[static_cast<std::size_t>(indptr[b] + i)] = next_pos_[b] + i;
    }
    if (o_.vision == vision_rule::fastv && o_.prune_images) check_fastv_context(segments);
    const index_t l = o_.sparse_layer;
    call_scope scope(*this);  // a failure after the first append leaves the cache partly updated
    begin_call();
    host_selection image_kept;  // the members change when the call succeeds
    token_decisions images;
    if (o_.vision == vision_rule::fastv && o_.prune_images) {
      // FastV: the last full layer also hands out its queries and keys.
      std::vector<float> q, k;
      run(0, l, indptr, h, pos, &q, &k);
      image_kept =
          detail::select_images_fastv(m_, image_, q, k, indptr, segments, o_, stats_, images);
    } else {
      run(0, l, indptr, h, pos);
      // Vision pruning at the sparse layer.
      image_kept = detail::select_images(image_, h, segments, o_, stats_, obs_, images);
    }
    const std::vector<kind_selection> pruned{{segment_kind::image, image_kept.view()}};
    const auto ctx =
        cpu::build_sparse_context(segments, make_host_span(std::as_const(pruned)),
                                  {.position_offsets = make_host_span(std::as_const(next_pos_))});
    std::vector<float> hk;
    detail::gather_context(h, H, ctx, hk);
    run(l, m_.layers(), ctx.indptr, hk, ctx.positions);
    for (std::size_t b = 0; b < rows.batch(); ++b) next_pos_[b] += rows.length(b);
    retain();
    end_call();
    image_kept_ = std::move(image_kept);
    images_ = std::move(images);
    gate_ = token_decisions{};  // no decode step since this prompt
    prefilled_ = true;
    scope.done();
    return detail::last_logits(m_, ctx.indptr, hk);
  }

  /// @brief One decode step: `tokens[b]` is sequence `b`'s newest token. At the sparse layer the
  /// output predictor decides keep (`logit0 > logit1`); the token attends to the cache and to
  /// itself in every layer, and enters a layer's cache iff `policy.admits(layer, keep)`.
  /// @return `[batch, vocab]` logits.
  /// @throws dynllava::error before `prefill`, or when `tokens` is not one id per sequence.
  std::vector<float> decode(host_span<const std::int32_t> tokens) {
    check_usable("decode");
    DYNLLAVA_EXPECTS(tokens.size() == cache_.batch(),
                     "kv_session::decode: one token per sequence ({}), got {}", cache_.batch(),
                     tokens.size());
    DYNLLAVA_EXPECTS(prefilled_, "kv_session::decode: call prefill() first (the context is empty)");
    for (std::size_t b = 0; b < tokens.size(); ++b) {
      DYNLLAVA_EXPECTS(tokens[b] >= 0 && tokens[b] < m_.vocab(),
                       "kv_session::decode: tokens[{}] = {} is outside the vocabulary [0, {})", b,
                       tokens[b], m_.vocab());
    }
    const std::size_t n = tokens.size();
    const index_t l = o_.sparse_layer;
    const bool gate = o_.gate_outputs && l < m_.layers();
    step_.resize(n, m_.hidden(), detail::retained_bound(cache_, policy_, n));
    std::vector<float> logits(n * static_cast<std::size_t>(m_.vocab()));
    call_scope scope(*this);
    begin_call();
    detail::count_rows(stats_, m_.layers(), 0, m_.layers(), n);
    session_hooks hooks(*this, step_.indptr);
    if (gate) {
      hooks.gate_layer = l;
      hooks.keep = step_.keep.data();
    }
    decode_step(host, m_, cache_, policy_, gate ? output_ : nullptr, l, tokens,
                make_host_span(std::as_const(next_pos_)), step_.view(), make_host_span(logits),
                hooks);
    advance_positions(host, make_host_span(next_pos_));
    end_call();
    token_decisions decided;  // the members change when the call succeeds
    decided.indptr = step_.indptr;
    if (gate) {
      decided.keep = step_.keep;
      decided.logits = step_.gate_logits;
      decided.margins_from_logits();
    } else {
      decided.keep.assign(n, 1);
    }
    stats_.output_tokens += static_cast<index_t>(n);
    for (auto k : decided.keep) stats_.output_kept += k;
    decisions_.insert(decisions_.end(), decided.keep.begin(), decided.keep.end());
    if (gate) {
      gate_logits_.insert(gate_logits_.end(), decided.logits.begin(), decided.logits.end());
    } else {
      gate_logits_.insert(gate_logits_.end(), 2 * n, std::numeric_limits<float>::quiet_NaN());
    }
    gate_ = std::move(decided);
    scope.done();
    return logits;
  }

  /// Number of sequences.
  std::size_t batch() const noexcept { return cache_.batch(); }
  /// Vocabulary size of the model (the width of the returned logits).
  index_t vocab() const noexcept { return m_.vocab(); }
  /// True once `prefill` has run (a `decode` needs it).
  bool prefilled() const noexcept { return prefilled_; }

  /// Kept positions among the image tokens of each sequence's last `prefill` call.
  const host_selection& image_kept() const noexcept { return image_kept_; }
  /// What ranked the image tokens of the last `prefill` call: the predictor's logits and margins
  /// (or FastV's attention), and the keep flags, per sequence.
  const token_decisions& image_decisions() const noexcept { return images_; }
  /// The last decode step's online gate: one candidate per sequence (its new token), the gate
  /// logits and margin (empty when the gate is off) and whether its K/V were cached.
  const token_decisions& gate_decisions() const noexcept { return gate_; }
  /// Keep decisions of every decoded token, step-major (`[steps * batch]`).
  const std::vector<std::uint8_t>& decisions() const noexcept { return decisions_; }
  /// Gate logits of every decoded token, step-major (`[steps * batch, 2]`, channel 0 = keep; NaN
  /// where the gate did not run: `gate_outputs = false` or no layer at or above `sparse_layer`).
  const std::vector<float>& gate_logits() const noexcept { return gate_logits_; }
  const run_stats& stats() const noexcept { return stats_; }
  /// `[layers * batch]`, layer-major: tokens each (layer, sequence) of the cache holds now.
  std::vector<index_t> cache_lengths() const {
    std::vector<index_t> out;
    for (index_t l = 0; l < cache_.layers(); ++l) {
      const auto held = cache_.lengths(l);
      out.insert(out.end(), held.begin(), held.end());
    }
    return out;
  }
  /// Bytes of K and V the cache holds now (`dynllava::bytes_held`).
  std::size_t bytes_held() const noexcept { return dynllava::bytes_held(cache_); }
  /// Reports every later call's work to `observer` (not owned; null: none).
  void observe(pipeline_observer* observer) noexcept { obs_ = observer; }

 private:
  /// @brief Marks a call as changing the session (`changing_`). The calls change their
  /// decisions, positions and the cache's content only after the first append reached the cache
  /// (`touched_`; appends are all or nothing per layer: a full cache fails there), and their
  /// statistics as they go; when a call throws before that point, the destructor puts the
  /// statistics back and the session stays usable. After it, `changing_` stays set.
  class call_scope {
   public:
    explicit call_scope(kv_session& s) : s_(s), stats_(s.stats_) {
      s_.changing_ = true;
      s_.touched_ = false;
    }
    call_scope(const call_scope&) = delete;
    call_scope& operator=(const call_scope&) = delete;
    ~call_scope() {
      if (done_ || s_.touched_) return;
      s_.stats_ = std::move(stats_);
      s_.changing_ = false;
    }
    /// The call succeeded.
    void done() noexcept {
      done_ = true;
      s_.changing_ = false;
    }

   private:
    kv_session& s_;
    run_stats stats_;
    bool done_ = false;
  };

  /// @throws dynllava::error when an earlier call failed after it had started changing the
  /// cache (the session and the cache are then in an unspecified state).
  void check_usable(const char* call) const {
    DYNLLAVA_EXPECTS(!changing_,
                     "kv_session::{}: an earlier call failed midway and left the cache partly "
                     "updated; discard this session and its cache",
                     call);
  }

  /// After every call: each layer keeps what the policy retains (layer-level, where it can
  /// evict); score-based policies rank by the attention accumulated in `attention_[layer]`.
  void retain() {
    std::vector<index_t> kept_indptr(cache_.batch() + 1),
        kept(detail::retained_bound(cache_, policy_, 0));
    dynllava::retain_layers(host, cache_, policy_, make_host_span(kept_indptr),
                            make_host_span(kept), session_hooks(*this, kept_indptr));
  }

  /// @brief The session's additions to the generic layer loop (`layer_hooks`): observer reports
  /// (the output predictor's before layer `gate_layer`'s), FastV's queries and keys of layer
  /// `probe_layer`, and for score-based policies the attention each cached token receives
  /// (`attention_`), kept in step with the cache's appends and evictions.
  struct session_hooks {
    session_hooks(kv_session& session, const std::vector<index_t>& call_indptr)
        : s(session), indptr(call_indptr) {}
    kv_session& s;
    const std::vector<index_t>& indptr;  ///< the call's rows per sequence (CSR)
    index_t gate_layer = -1;             ///< the gate runs before this layer (-1: not at all)
    const std::uint8_t* keep = nullptr;  ///< [rows] the gate's flags from `gate_layer` on
    index_t probe_layer = -1;            ///< FastV: the layer whose queries and keys are kept
    std::vector<float>* queries = nullptr;
    std::vector<float>* keys_out = nullptr;
    const std::vector<float>* keys = nullptr;  ///< the loop's key scratch
    std::vector<index_t> cached;               ///< the layer's lengths before its append
    std::vector<float> mass, scores;
    std::vector<index_t> scores_indptr;

    layer_probes probes(index_t l) {
      if (l == gate_layer && s.obs_ != nullptr) s.obs_->output_predictor(indptr.size() - 1);
      const auto held = s.cache_.lengths(l);
      cached.assign(held.begin(), held.end());
      detail::observe_layer(s.obs_, l, indptr, cached);
      layer_probes p;
      if (l == probe_layer) p.queries = make_host_span(*queries);
      if constexpr (kv_policy_needs_scores<Policy>) {
        mass.resize(
            key_attention_size(make_host_span(indptr), make_host_span(std::as_const(cached))));
        p.key_attention = make_host_span(mass);
      }
      return p;
    }
    void appended(index_t l) {
      s.touched_ = true;  // the cache holds this call's tokens from here on
      if (l == probe_layer && keys_out != nullptr) *keys_out = *keys;
      if constexpr (kv_policy_needs_scores<Policy>) {
        std::vector<std::uint8_t> admitted(static_cast<std::size_t>(indptr.back()));
        const bool gated = keep != nullptr && gate_layer >= 0 && l >= gate_layer;
        for (std::size_t r = 0; r < admitted.size(); ++r)
          admitted[r] = s.policy_.admits(l, !gated || keep[r] != 0) ? 1 : 0;
        s.attention_.track(l, make_host_span(indptr), make_host_span(std::as_const(cached)),
                           make_host_span(std::as_const(admitted)),
                           make_host_span(std::as_const(mass)));
      }
    }
    host_ragged<const float> retention_scores(index_t l) {
      if constexpr (kv_policy_needs_scores<Policy>) {
        scores_indptr.resize(s.cache_.batch() + 1);
        const auto total = static_cast<std::size_t>(
            lengths_to_indptr(s.cache_.lengths(l), make_host_span(scores_indptr)));
        scores.resize(total);
        s.attention_.scores(l, make_host_span(scores));
        return {make_host_span(std::as_const(scores_indptr)),
                make_host_span(std::as_const(scores))};
      } else {
        (void)l;
        return {};
      }
    }
    void retained(index_t l, host_span<const index_t> kept_indptr, host_span<const index_t> kept) {
      if constexpr (kv_policy_needs_scores<Policy>) {
        s.attention_.retain(
            l, {kept_indptr,
                kept.subspan(0, static_cast<std::size_t>(kept_indptr[kept_indptr.size() - 1]))});
      } else {
        (void)l, (void)kept_indptr, (void)kept;
      }
    }
  };

  void begin_call() {
    if (obs_ != nullptr) obs_->begin_call(m_.layers());
  }
  void end_call() {
    if (obs_ == nullptr) return;
    std::vector<index_t> held(static_cast<std::size_t>(m_.layers()));
    for (index_t layer = 0; layer < m_.layers(); ++layer)
      held[static_cast<std::size_t>(layer)] = held_tokens(cache_, layer);
    obs_->end_call(cache_.batch(), make_host_span(std::as_const(held)));
  }

  /// FastV ranks image tokens within the call that brings them (its softmax is over the call's
  /// keys), so a sequence with an image must have nothing cached before it.
  /// Checked before anything runs.
  void check_fastv_context(segment_table<host_space> segments) const {
    const auto cands = cpu::candidate_rows(segments, segment_kind::image);
    for (std::size_t b = 0; b < cache_.batch(); ++b) {
      DYNLLAVA_EXPECTS(
          cands.indptr[b + 1] == cands.indptr[b] || cache_.lengths(o_.sparse_layer - 1)[b] == 0,
          "kv_session: FastV ranks image tokens within the prompt that holds them; "
          "sequence {} brings an image after earlier turns",
          b);
    }
  }

  /// Layers [from, to) of a prompt on `h` (ragged by `indptr`) through `run_layers`, appending
  /// every row's K/V under the policy (a prompt's tokens count as kept) and, for score-based
  /// policies, tracking the attention each cached token received. With `q_last`/`k_last` the last
  /// layer's queries and keys are handed out (FastV).
  void run(index_t from, index_t to, const std::vector<index_t>& indptr, std::vector<float>& h,
           const std::vector<index_t>& pos, std::vector<float>* q_last = nullptr,
           std::vector<float>* k_last = nullptr) {
    const index_t H = m_.hidden();
    std::vector<float> k(h.size()), v(h.size());
    detail::count_rows(stats_, m_.layers(), from, to, pos.size());
    session_hooks hooks(*this, indptr);
    if (q_last != nullptr) {
      q_last->assign(h.size(), 0.0f);
      hooks.probe_layer = to - 1;
      hooks.queries = q_last;
      hooks.keys_out = k_last;
      hooks.keys = &k;
    }
    dynllava::run_layers(host, m_, cache_, policy_, from, to,
                         {make_host_span(indptr), make_host_span(h), H}, make_host_span(pos), {},
                         make_host_span(k), make_host_span(v), hooks);
  }

  const Model& m_;
  Cache& cache_;
  Policy policy_;
  const ImagePredictor* image_;
  const OutputPredictor* output_;
  sparsifier_options o_;
  std::vector<index_t> next_pos_;
  bool prefilled_ = false;
  bool changing_ = false;  ///< a call is (or was, when it failed) changing the cache
  bool touched_ = false;   ///< the current call has appended to the cache
  host_selection image_kept_;
  token_decisions images_, gate_;
  std::vector<std::uint8_t> decisions_;
  std::vector<float> gate_logits_;  ///< [steps * batch, 2]
  run_stats stats_;
  pipeline_observer* obs_ = nullptr;
  host_decode_buffers step_;  ///< the decode step's buffers, sized once, reused
  layer_attention<session_scorer_t<Policy>> attention_;  ///< only for score-based policies
};

/// `kv_session(model, cache, policy, &image, &output, options)`; `nullptr` for a predictor the
/// options do not use gives `no_predictor`.
template <class Model, class Cache, class Policy, image_argument PI, predictor_argument PO>
kv_session(const Model&, Cache&, Policy, PI, PO, sparsifier_options = {})
    -> kv_session<Model, Cache, Policy, predictor_type_t<PI>, predictor_type_t<PO>>;

}  // namespace dynllava
