// SPDX-License-Identifier: Apache-2.0
/// @file schedule_trace.hpp
/// @brief Analytic traces: what a schedule does in a prefill or in decode step `t`, layer by
/// layer, for a request (see schedule.hpp for the step convention).
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/schedule.hpp>
#include <dynllava/cost/trace.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <variant>

namespace dynllava::cost {

namespace detail {

/// One sequence in one layer: `rows` new rows attend to the `cached_before` cached tokens and
/// causally to each other (themselves included); the layer's cache then holds `cached_after`.
constexpr layer_trace causal_layer(std::int64_t cached_before, std::int64_t rows,
                                   std::int64_t cached_after) noexcept {
  return {rows, rows * cached_before + rows * (rows + 1) / 2, cached_after};
}

/// How many of generated tokens `0 .. t-1` Dynamic-LLaVA keeps.
inline std::int64_t kept_outputs(const dynamic_llava_schedule& s, std::int64_t t) {
  if (s.output_decisions.empty()) {
    return static_cast<std::int64_t>(std::floor(static_cast<double>(t) * s.output_keep));
  }
  DYNLLAVA_EXPECTS(t <= static_cast<std::int64_t>(s.output_decisions.size()),
                   "dynamic-llava: output_decisions holds {} tokens, the step needs {}",
                   s.output_decisions.size(), t);
  const auto end = s.output_decisions.begin() + static_cast<std::ptrdiff_t>(t);
  return static_cast<std::int64_t>(std::count(s.output_decisions.begin(), end, std::uint8_t{1}));
}

/// H2O's cache size after `n` tokens have been seen.
inline std::int64_t h2o_held(const h2o_schedule& s, std::int64_t n) {
  const auto budget = static_cast<std::int64_t>(std::floor(static_cast<double>(n) * s.budget));
  return std::min(n, std::max(std::int64_t{s.recent}, budget));
}

/// One sequence's pass as "layers < split look like `full`, the others like `sparse`".
struct split_pass {
  index_t split = 0;
  layer_trace full{};
  layer_trace sparse{};
  std::int64_t image_scored = 0;
  std::int64_t image_pairs = 0;
  std::int64_t output_scored = 0;
};

/// The per-sequence pass of each schedule (argument checks are done by the caller).
inline split_pass sequence_pass(const llava_sizes& config, const dense_schedule&,
                                const request& req, pass_kind pass, std::int64_t t) {
  const std::int64_t p = req.prompt_tokens();
  split_pass s;
  s.split = config.layers;
  switch (pass) {
    case pass_kind::prefill:
      s.full = causal_layer(0, p, p);
      break;
    case pass_kind::decode_kv_cache:
      s.full = causal_layer(p + t, 1, p + t + 1);
      break;
    case pass_kind::decode_no_cache:
      s.full = causal_layer(0, p + t + 1, 0);
      break;
  }
  return s;
}

inline split_pass sequence_pass(const llava_sizes&, const fastv_schedule& f, const request& req,
                                pass_kind pass, std::int64_t t) {
  const std::int64_t p = req.prompt_tokens();
  const std::int64_t kept_p = p - req.image_tokens + ratio_budget(req.image_tokens, f.image_keep);
  split_pass s;
  s.split = f.layer;
  switch (pass) {
    case pass_kind::prefill:
      s.full = causal_layer(0, p, p);
      s.sparse = causal_layer(0, kept_p, kept_p);
      break;
    case pass_kind::decode_kv_cache:
      s.full = causal_layer(p + t, 1, p + t + 1);
      s.sparse = causal_layer(kept_p + t, 1, kept_p + t + 1);
      break;
    case pass_kind::decode_no_cache:
      s.full = causal_layer(0, p + t + 1, 0);
      s.sparse = causal_layer(0, kept_p + t + 1, 0);
      break;
  }
  return s;
}

inline split_pass sequence_pass(const llava_sizes& config, const dynamic_llava_schedule& d,
                                const request& req, pass_kind pass, std::int64_t t) {
  const std::int64_t p = req.prompt_tokens();
  const std::int64_t n = req.image_tokens;
  const std::int64_t kept_p = p - n + ratio_budget(req.image_tokens, d.vision_keep);
  const bool predictors_run = d.sparse_layer < config.layers;
  split_pass s;
  s.split = d.sparse_layer;
  switch (pass) {
    case pass_kind::prefill:
      s.full = causal_layer(0, p, p);
      s.sparse = causal_layer(0, kept_p, kept_p);
      if (predictors_run) {
        s.image_scored = n;
        s.image_pairs = n * n;
      }
      break;
    case pass_kind::decode_kv_cache: {
      const std::int64_t kept_before = kept_outputs(d, t);
      const std::int64_t kept_after = kept_outputs(d, t + 1);
      s.full = causal_layer(p + t, 1, p + t + 1);
      s.sparse = causal_layer(kept_p + kept_before, 1, kept_p + kept_after);
      if (predictors_run) s.output_scored = 1;
      break;
    }
    case pass_kind::decode_no_cache: {
      // The image selection of the prompt's pass is reused (its decision cannot change: METHOD.md
      // 4a; `no_cache_session` does so); the candidates at layer l are generated tokens
      // 0 .. t-1; token t is always kept.
      s.full = causal_layer(0, p + t + 1, 0);
      s.sparse = causal_layer(0, kept_p + kept_outputs(d, t) + 1, 0);
      if (predictors_run) s.output_scored = t;
      break;
    }
  }
  return s;
}

inline split_pass sequence_pass(const llava_sizes&, const h2o_schedule& h, const request& req,
                                pass_kind pass, std::int64_t t) {
  const std::int64_t p = req.prompt_tokens();
  split_pass s;
  s.split = h.full_layers;
  switch (pass) {
    case pass_kind::prefill:
      s.full = causal_layer(0, p, p);
      s.sparse = causal_layer(0, p, h2o_held(h, p));
      break;
    case pass_kind::decode_kv_cache:
      s.full = causal_layer(p + t, 1, p + t + 1);
      s.sparse = causal_layer(h2o_held(h, p + t), 1, h2o_held(h, p + t + 1));
      break;
    case pass_kind::decode_no_cache:
      DYNLLAVA_FAIL(
          "h2o: H2O only evicts from a KV cache; decode without KV cache is not "
          "defined for it (use dense)");
  }
  return s;
}

}  // namespace detail

/// Whether `schedule_trace(config, s, req, pass, t)` is defined (H2O has no decode without KV
/// cache).
[[nodiscard]] inline bool supports(const schedule& s, pass_kind pass) noexcept {
  return !(std::holds_alternative<h2o_schedule>(s) && pass == pass_kind::decode_no_cache);
}

/// The trace of one pass of schedule `s` over `req.batch` identical sequences.
/// @param[in] config model sizes
/// @param[in] s the schedule
/// @param[in] req prompt shape and batch
/// @param[in] pass prefill, or a decode step with or without KV cache
/// @param[in] step the decode step `t >= 0` (generated token `t` is processed; ignored for
///            prefill). A prefill reports the caches it fills (what a KV-cache run then holds);
///            a step without KV cache holds none (`kv_tokens` 0).
/// @throws dynllava::error for an invalid config, request or schedule, a negative step, a
///         step beyond `output_decisions`, or an H2O step without KV cache.
[[nodiscard]] inline trace schedule_trace(const llava_sizes& config, const schedule& s,
                                          const request& req, pass_kind pass,
                                          std::int64_t step = 0) {
  config.validate();
  req.validate();
  validate(s, config.layers);
  DYNLLAVA_EXPECTS(step >= 0, "schedule_trace: step must be >= 0, got {}", step);
  const std::int64_t t = pass == pass_kind::prefill ? 0 : step;
  const detail::split_pass one = std::visit(
      [&](const auto& params) { return detail::sequence_pass(config, params, req, pass, t); }, s);

  const std::int64_t b = req.batch;
  const auto scaled = [b](layer_trace x) {
    return layer_trace{x.query_rows * b, x.attention_pairs * b, x.kv_tokens * b};
  };
  trace out;
  out.layers.resize(static_cast<std::size_t>(config.layers));
  for (index_t l = 0; l < config.layers; ++l) {
    out.layers[static_cast<std::size_t>(l)] = scaled(l < one.split ? one.full : one.sparse);
  }
  out.image_tokens_scored = one.image_scored * b;
  out.image_attention_pairs = one.image_pairs * b;
  out.output_tokens_scored = one.output_scored * b;
  out.logit_rows = b;
  return out;
}

}  // namespace dynllava::cost
