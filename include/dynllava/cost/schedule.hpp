// SPDX-License-Identifier: Apache-2.0
/// @file schedule.hpp
/// @brief The token schedules the cost model knows (dense, FastV, Dynamic-LLaVA, H2O), the
/// request they run on (prompt shape, batch) and the three kinds of forward pass.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>
#include <vector>

namespace dynllava::cost {

/// Every layer sees every token; every token is cached in every layer.
struct dense_schedule {};

/// FastV: layers `< layer` see the full context; at `layer` the image tokens are cut to
/// `floor(n_image * image_keep)` (by the last token's attention) for every later layer, in
/// prefill and in each step without KV cache. With a KV cache, layers `>= layer` hold only the
/// kept image tokens. Generated tokens are never dropped. Paper setting: K = 3, keep 25%.
struct fastv_schedule {
  index_t layer = 3;         ///< K: layers before it are full
  double image_keep = 0.25;  ///< kept fraction of the image tokens (576 -> 144)
};

/// Dynamic-LLaVA (METHOD.md sections 2 and 4): layers `< sparse_layer` see and cache every
/// token; layers `>= sparse_layer` see the top `floor(n_image * vision_keep)` image tokens
/// (115 of 576) and the generated tokens the output predictor keeps (the token being processed
/// is always seen; with a KV cache it is appended to layers `>= sparse_layer` only if kept).
///
/// Which generated tokens are kept: `output_decisions[i]` (1 = keep) for generated token `i`
/// when given (real decisions, e.g. from the pipeline); otherwise the expected-rate model
/// "token `i` is kept iff `floor((i + 1) r) > floor(i r)`", so that `floor(t r)` of the first
/// `t` tokens are kept (r = `output_keep`; the paper's training target is 0.5).
struct dynamic_llava_schedule {
  index_t sparse_layer = 2;                    ///< l: layers before it are full
  double vision_keep = 0.2;                    ///< kept fraction of the image tokens
  double output_keep = 0.5;                    ///< expected kept fraction of generated tokens
  std::vector<std::uint8_t> output_decisions;  ///< optional, `[generated tokens]`, 1 = keep
};

/// H2O (heavy-hitter oracle), a KV-cache policy only: prefill is dense; after each pass the
/// caches of layers `>= full_layers` keep `held(n) = min(n, max(recent, floor(n * budget)))` of
/// the `n` tokens seen so far (heavy hitters plus the `recent` newest tokens, inside the
/// budget). Decode without KV cache is not defined for it (there is no cache to evict from).
/// Paper setting: 50% of the cache, the first 10 layers uncompressed.
struct h2o_schedule {
  double budget = 0.5;       ///< kept fraction of the tokens seen
  index_t recent = 32;       ///< newest tokens always kept (part of the budget)
  index_t full_layers = 10;  ///< layers before it keep their whole cache
};

/// One of the schedules above.
using schedule = std::variant<dense_schedule, fastv_schedule, dynamic_llava_schedule, h2o_schedule>;

/// Short name of a schedule: "dense", "fastv", "dynamic-llava", "h2o".
[[nodiscard]] inline std::string_view schedule_name(const schedule& s) noexcept {
  switch (s.index()) {
    case 0:
      return "dense";
    case 1:
      return "fastv";
    case 2:
      return "dynamic-llava";
    default:
      return "h2o";
  }
}

/// The kind of forward pass.
enum class pass_kind : std::uint8_t {
  prefill,          ///< the prompt, once (fills the KV cache when one is used)
  decode_no_cache,  ///< decode step t without KV cache: prompt + generated tokens 0..t, recomputed
  decode_kv_cache,  ///< decode step t with KV cache: generated token t over the cache
};

[[nodiscard]] constexpr std::string_view to_string(pass_kind k) noexcept {
  switch (k) {
    case pass_kind::prefill:
      return "prefill";
    case pass_kind::decode_no_cache:
      return "decode_no_cache";
    case pass_kind::decode_kv_cache:
      return "decode_kv_cache";
  }
  return "?";
}

/// The request a schedule runs on: `batch` identical sequences of
/// `[system | image | instruction]` prompt tokens. The LLaVA-1.5 `vicuna_v1` template puts
/// about 35 tokens before the image; `instruction_tokens` counts the question and
/// " ASSISTANT:".
///
/// Decode step `t` (t = 0, 1, ...) processes generated token `t`: before it, the context holds
/// the prompt and generated tokens `0 .. t-1`. Generating T tokens with a KV cache takes the
/// prefill (whose logits give token 0) and steps 0 .. T-1 (step T-1's logits would give token T;
/// counting it keeps "T steps for T tokens", and puts all T tokens in the cache).
struct request {
  index_t system_tokens = 35;
  index_t image_tokens = 576;
  index_t instruction_tokens = 20;
  index_t batch = 1;

  [[nodiscard]] constexpr std::int64_t prompt_tokens() const noexcept {
    return std::int64_t{system_tokens} + image_tokens + instruction_tokens;
  }

  /// @throws dynllava::error naming the field that is negative, a zero batch, or an empty prompt.
  void validate() const {
    DYNLLAVA_EXPECTS(system_tokens >= 0, "request: system_tokens must be >= 0, got {}",
                     system_tokens);
    DYNLLAVA_EXPECTS(image_tokens >= 0, "request: image_tokens must be >= 0, got {}", image_tokens);
    DYNLLAVA_EXPECTS(instruction_tokens >= 0, "request: instruction_tokens must be >= 0, got {}",
                     instruction_tokens);
    DYNLLAVA_EXPECTS(batch > 0, "request: batch must be > 0, got {}", batch);
    DYNLLAVA_EXPECTS(prompt_tokens() > 0, "request: the prompt must hold at least one token");
  }
};

namespace detail {

inline void expect_fraction(double value, std::string_view what) {
  DYNLLAVA_EXPECTS(value >= 0.0 && value <= 1.0, "{} must be in [0, 1], got {}", what, value);
}

}  // namespace detail

/// Checks a schedule's parameters against a model of `layers` decoder layers.
/// @throws dynllava::error naming the schedule and parameter, with the expected range.
inline void validate(const schedule& s, index_t layers) {
  if (const auto* f = std::get_if<fastv_schedule>(&s)) {
    DYNLLAVA_EXPECTS(f->layer >= 0 && f->layer <= layers, "fastv: layer must be in [0, {}], got {}",
                     layers, f->layer);
    detail::expect_fraction(f->image_keep, "fastv: image_keep");
  } else if (const auto* d = std::get_if<dynamic_llava_schedule>(&s)) {
    DYNLLAVA_EXPECTS(d->sparse_layer >= 0 && d->sparse_layer <= layers,
                     "dynamic-llava: sparse_layer must be in [0, {}], got {}", layers,
                     d->sparse_layer);
    detail::expect_fraction(d->vision_keep, "dynamic-llava: vision_keep");
    detail::expect_fraction(d->output_keep, "dynamic-llava: output_keep");
    for (std::size_t i = 0; i < d->output_decisions.size(); ++i) {
      DYNLLAVA_EXPECTS(d->output_decisions[i] <= 1,
                       "dynamic-llava: output_decisions[{}] must be 0 or 1, got {}", i,
                       d->output_decisions[i]);
    }
  } else if (const auto* h = std::get_if<h2o_schedule>(&s)) {
    detail::expect_fraction(h->budget, "h2o: budget");
    DYNLLAVA_EXPECTS(h->recent >= 0, "h2o: recent must be >= 0, got {}", h->recent);
    DYNLLAVA_EXPECTS(h->full_layers >= 0 && h->full_layers <= layers,
                     "h2o: full_layers must be in [0, {}], got {}", layers, h->full_layers);
  }
}

}  // namespace dynllava::cost
