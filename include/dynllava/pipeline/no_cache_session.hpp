// SPDX-License-Identifier: Apache-2.0
/// @file no_cache_session.hpp
/// @brief `no_cache_session`: a batch of conversations decoded without KV cache, keeping the
/// context between steps and ranking each image once (METHOD.md sections 2, 4 and 4a).
#pragma once

#include <dynllava/context/segments.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/pipeline/decode_without_cache.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/image_ranker.hpp>
#include <dynllava/pipeline/no_predictor.hpp>
#include <dynllava/pipeline/pipeline_observer.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/pipeline/token_decisions.hpp>
#include <dynllava/score/concepts.hpp>

#include <cstdint>
#include <optional>
#include <vector>

namespace dynllava {

/// @brief Decoding without KV cache with the same calls as `kv_session`: `prefill` a prompt per
/// sequence (the first turn, or a later user turn after the conversation so far), then `decode`
/// one token per sequence per step; every call recomputes the whole context
/// (`decode_without_cache`).
///
/// Each image is ranked once, in the `prefill` that brings it, and its decisions are reused at
/// every later call (steps and later prompts): the hidden states of image tokens entering the
/// sparse layer do not depend on anything after them, so the predictor's decision never changes
/// (METHOD.md 4a). FastV ranks by the newest row, so it ranks again at every call.
///
/// Seams as `kv_session`: any `decoder<Model, host_t, Cache>`, `two_way_predictor`s (or
/// `nullptr`), and in the image slot an `attention_scorer` for `vision_rule::fastv`. Host memory;
/// the session owns the context rows (`[rows, H]` per sequence).
///
/// Errors: every call is all or nothing. Bad arguments throw before anything changes; a call
/// that fails later (the decoder or a predictor throws) leaves the conversation, statistics and
/// decisions as they were, so the session stays usable (an observer may have been told of the
/// failed call's start).
template <class Model, image_ranker<host_t> ImagePredictor,
          two_way_predictor<host_t> OutputPredictor,
          kv_storage<host_t> Cache = no_cache_storage_t<Model>>
requires decoder<Model, host_t, Cache>
class no_cache_session {
 public:
  /// @throws dynllava::error on options or predictor widths that do not fit the model.
  no_cache_session(const Model& model, std::size_t batch, const ImagePredictor* image,
                   const OutputPredictor* output, sparsifier_options options = {})
      : m_(model), image_(image), output_(output), o_(options), rows_(batch), segs_(batch) {
    detail::check_options<Model, Cache>(o_, model.layers(), model.hidden(), image, output,
                                        "no_cache_session");
    o_ = detail::runnable_options(o_, model.layers());
  }

  std::size_t batch() const noexcept { return rows_.size(); }
  index_t vocab() const noexcept { return m_.vocab(); }
  bool prefilled() const noexcept { return prefilled_; }

  /// @brief Appends a prompt per sequence (rows `[rows, H]` ragged per sequence, `segments`
  /// local to this call with turns from 0; they are placed after the conversation so far, in a
  /// new turn) and runs a step.
  /// @return `[batch, vocab]` logits of each sequence's last row.
  /// @throws dynllava::error when shapes disagree, a prompt is empty or holds output segments;
  ///         nothing changes then.
  std::vector<float> prefill(host_ragged_rows<const float> rows,
                             segment_table<host_space> segments) {
    validate(segments, "no_cache_session::prefill: segments");
    validate(rows, "no_cache_session::prefill: rows");
    DYNLLAVA_EXPECTS(
        rows.width == m_.hidden() && rows.batch() == batch() && segments.batch() == batch(),
        "no_cache_session::prefill: rows ({} sequences of width {}) and segments ({} "
        "sequences) must cover the batch ({}) at the model's width {}",
        rows.batch(), rows.width, segments.batch(), batch(), m_.hidden());
    for (const segment& seg : segments.segments) {
      DYNLLAVA_EXPECTS(seg.kind != segment_kind::output,
                       "no_cache_session::prefill: a prompt holds system, image and instruction "
                       "segments; generated tokens go through decode()");
    }
    for (std::size_t b = 0; b < batch(); ++b) {
      DYNLLAVA_EXPECTS(rows.length(b) == segments.length(b) && rows.length(b) > 0,
                       "no_cache_session::prefill: sequence {} has {} rows, its segments {} (must "
                       "be equal and > 0)",
                       b, rows.length(b), segments.length(b));
      DYNLLAVA_EXPECTS(
          segments.segments[static_cast<std::size_t>(segments.indptr[b + 1] - 1)].kind !=
              segment_kind::image,
          "no_cache_session::prefill: prompt {} must end with text (its last row's logits are "
          "returned)",
          b);
    }
    const auto H = static_cast<std::size_t>(m_.hidden());
    auto logits = grow_and_step([&] {
      for (std::size_t b = 0; b < batch(); ++b) {
        const index_t first_row = length(b);
        const index_t turn = segs_[b].empty() ? 0 : segs_[b].back().turn + 1;
        for (index_t i = segments.indptr[b]; i < segments.indptr[b + 1]; ++i) {
          segment seg = segments.segments[static_cast<std::size_t>(i)];
          seg.begin += first_row;
          seg.turn += turn;
          segs_[b].push_back(seg);
        }
        const float* r = rows.row(static_cast<std::size_t>(rows.indptr[b]));
        rows_[b].insert(rows_[b].end(), r, r + static_cast<std::size_t>(rows.length(b)) * H);
      }
    });
    prefilled_ = true;
    return logits;
  }

  /// @brief One step: `tokens[b]` (embedded by the model) joins sequence `b` as a generated token
  /// of its current turn; the whole context is recomputed with the kept images of the last prompt.
  /// @return `[batch, vocab]` logits.
  /// @throws dynllava::error before `prefill`, or when `tokens` is not one id per sequence.
  std::vector<float> decode(host_span<const std::int32_t> tokens) {
    DYNLLAVA_EXPECTS(tokens.size() == batch(),
                     "no_cache_session::decode: one token per sequence ({}), got {}", batch(),
                     tokens.size());
    DYNLLAVA_EXPECTS(prefilled_,
                     "no_cache_session::decode: call prefill() first (the context is empty)");
    for (std::size_t b = 0; b < tokens.size(); ++b) {
      DYNLLAVA_EXPECTS(
          tokens[b] >= 0 && tokens[b] < m_.vocab(),
          "no_cache_session::decode: tokens[{}] = {} is outside the vocabulary [0, {})", b,
          tokens[b], m_.vocab());
    }

    const auto H = static_cast<std::size_t>(m_.hidden());
    std::vector<float> e(tokens.size() * H);
    m_.embed(host, tokens, make_host_span(e));
    return grow_and_step([&] {
      for (std::size_t b = 0; b < batch(); ++b) {
        auto& segs = segs_[b];
        if (segs.back().kind == segment_kind::output) {
          ++segs.back().length;
        } else {
          segs.push_back({segment_kind::output, length(b), 1, segs.back().turn});
        }
        rows_[b].insert(rows_[b].end(), e.begin() + static_cast<std::ptrdiff_t>(b * H),
                        e.begin() + static_cast<std::ptrdiff_t>((b + 1) * H));
      }
    });
  }

  /// The image candidates of the conversation and what ranked them (each image ranked in the
  /// `prefill` that brought it and reused since; FastV ranks again at every call).
  const token_decisions& image_decisions() const noexcept { return seen_.images; }
  /// The last step's output candidates (every generated token but the newest): logits, margins,
  /// keep flags.
  const token_decisions& output_decisions() const noexcept { return seen_.outputs; }
  const run_stats& stats() const noexcept { return stats_; }
  /// Reports every later call's work to `observer` (not owned; null: none).
  void observe(pipeline_observer* observer) noexcept { obs_ = observer; }

  /// The conversation so far: `[rows, H]` per sequence, packed, and its segments.
  struct context {
    std::vector<index_t> indptr{0};  ///< [batch + 1] rows per sequence
    std::vector<float> rows;         ///< [rows, H]
    std::vector<index_t> seg_indptr{0};
    std::vector<segment> segments;
    host_ragged_rows<const float> view(index_t H) const {
      return {make_host_span(indptr), make_host_span(rows), H};
    }
    segment_table<host_space> table() const {
      return {make_host_span(seg_indptr), make_host_span(segments)};
    }
  };
  context current() const {
    context c;
    for (std::size_t b = 0; b < batch(); ++b) {
      c.rows.insert(c.rows.end(), rows_[b].begin(), rows_[b].end());
      c.indptr.push_back(c.indptr.back() + length(b));
      c.segments.insert(c.segments.end(), segs_[b].begin(), segs_[b].end());
      c.seg_indptr.push_back(static_cast<index_t>(c.segments.size()));
    }
    return c;
  }

 private:
  index_t length(std::size_t b) const {
    return static_cast<index_t>(rows_[b].size() / static_cast<std::size_t>(m_.hidden()));
  }

  /// Grows the conversation (`grow`), then recomputes it. All or nothing: when either throws
  /// (the decoder or a predictor fails mid-step, memory runs out), the conversation, statistics
  /// and decisions are as they were before the call, and the session stays usable.
  template <class Grow>
  std::vector<float> grow_and_step(Grow&& grow) {
    std::vector<std::size_t> sizes(batch());
    for (std::size_t b = 0; b < batch(); ++b) sizes[b] = rows_[b].size();
    auto segs_before = segs_;
    try {
      grow();
      return step();
    } catch (...) {
      for (std::size_t b = 0; b < batch(); ++b) rows_[b].resize(sizes[b]);
      segs_ = std::move(segs_before);
      throw;
    }
  }

  /// Recomputes the conversation; its statistics and decisions change only when it succeeds.
  std::vector<float> step() {
    const auto ctx = current();
    const bool reuse =
        images_.has_value() && o_.vision == vision_rule::predictor && o_.prune_images;
    run_stats stats = stats_;
    detail::no_cache_seen seen;
    auto logits = detail::no_cache_step<Model, Cache>(
        m_, image_, output_, ctx.view(m_.hidden()), ctx.table(), o_, stats, obs_, seen,
        reuse ? &*images_ : nullptr, "no_cache_session");
    stats_ = std::move(stats);
    seen_ = std::move(seen);
    images_ = seen_.images;
    return logits;
  }

  const Model& m_;
  const ImagePredictor* image_;
  const OutputPredictor* output_;
  sparsifier_options o_;
  std::vector<std::vector<float>> rows_;    ///< [batch] each `[rows, H]`
  std::vector<std::vector<segment>> segs_;  ///< [batch]
  bool prefilled_ = false;
  std::optional<token_decisions> images_;  ///< the image decisions so far (every prompt's)
  detail::no_cache_seen seen_;
  run_stats stats_;
  pipeline_observer* obs_ = nullptr;
};

/// `no_cache_session(model, batch, &image, &output, options)`; `nullptr` gives `no_predictor`.
template <class Model, image_argument PI, predictor_argument PO>
no_cache_session(const Model&, std::size_t, PI, PO, sparsifier_options = {})
    -> no_cache_session<Model, predictor_type_t<PI>, predictor_type_t<PO>,
                        no_cache_storage_t<Model>>;

}  // namespace dynllava
