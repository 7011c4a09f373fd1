// SPDX-License-Identifier: Apache-2.0
/// @file generate.hpp
/// @brief `generate`: the token loop over a decoding session (`kv_session`, `no_cache_session` or
/// an engine's own): prefill, then sample and decode until EOS or a token budget, with a callback
/// per generated token for streaming.
#pragma once

#include <dynllava/context/segments.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/pipeline/token_sampler.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace dynllava {

/// @brief A session the generate loop can drive. Requirements, for `S& s`:
///   1. `s.batch()` is the number of sequences and `s.vocab()` the width of a logits row;
///   2. `s.prefill(rows, segments)` (`host_ragged_rows<const float>`, `segment_table<host_space>`)
///      runs a prompt per sequence and returns `[batch, vocab]` logits of each last row;
///   3. `s.decode(tokens)` (`host_span<const std::int32_t>`, `[batch]`) appends one token per
///      sequence and returns `[batch, vocab]` logits.
template <class S>
concept decoding_session = requires(S& s, host_ragged_rows<const float> rows,
                                    segment_table<host_space> segments,
                                    host_span<const std::int32_t> tokens) {
  { s.batch() } -> std::convertible_to<std::size_t>;
  { s.vocab() } -> std::convertible_to<index_t>;
  { s.prefill(rows, segments) } -> std::same_as<std::vector<float>>;
  { s.decode(tokens) } -> std::same_as<std::vector<float>>;
};

/// When to stop and how to choose tokens.
struct generate_options {
  index_t max_new_tokens = 64;      ///< the token budget per sequence, >= 0
  std::optional<std::int32_t> eos;  ///< a sequence stops after generating it (it is included)
  sampling_options sampling{};      ///< greedy by default
};

/// What `generate` produced. Host memory, owning.
struct generation {
  std::vector<std::vector<std::int32_t>> tokens;  ///< [batch] generated ids (EOS included)
  std::vector<std::uint8_t> stopped_at_eos;       ///< [batch] 1 = ended with EOS, 0 = budget
};

/// The default per-token callback: does nothing.
struct ignore_tokens {
  void operator()(std::size_t, std::int32_t) const noexcept {}
};

/// @brief Runs `s.prefill(prompt, segments)`, then chooses one token per sequence from each
/// logits row and decodes it, until every sequence has generated EOS or `max_new_tokens`.
/// `on_token(sequence, token)` is called for every generated token as soon as it is chosen
/// (streaming). The batch moves together: a sequence that has stopped is fed its EOS again until
/// the others stop (its later tokens are not reported). The last chosen tokens are not decoded.
/// @throws dynllava::error on bad options (nothing runs) or whatever the session throws.
template <decoding_session S, class OnToken = ignore_tokens>
requires std::invocable<OnToken&, std::size_t, std::int32_t> generation
generate(S& s, host_ragged_rows<const float> prompt, segment_table<host_space> segments,
         const generate_options& o, OnToken&& on_token = {}) {
  DYNLLAVA_EXPECTS(o.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got {}",
                   o.max_new_tokens);
  DYNLLAVA_EXPECTS(!o.eos || (*o.eos >= 0 && *o.eos < s.vocab()),
                   "generate: eos must be a token id in [0, {}), got {}", s.vocab(),
                   o.eos.value_or(-1));
  o.sampling.validate();
  const std::size_t batch = s.batch();
  std::vector<token_sampler> samplers;
  for (std::size_t b = 0; b < batch; ++b) samplers.emplace_back(o.sampling, b);
  generation g{std::vector<std::vector<std::int32_t>>(batch), std::vector<std::uint8_t>(batch, 0)};
  const auto V = static_cast<std::size_t>(s.vocab());
  auto checked = [&](std::vector<float> logits, const char* call) {
    DYNLLAVA_EXPECTS(
        logits.size() == batch * V,
        "generate: the session's {} returned {} logits, expected batch x vocab = {} x {}", call,
        logits.size(), batch, V);
    return logits;
  };
  auto logits = checked(s.prefill(prompt, segments), "prefill");
  if (o.max_new_tokens == 0) return g;
  std::vector<std::int32_t> next(batch);
  for (index_t step = 0;; ++step) {
    bool running = false;
    for (std::size_t b = 0; b < batch; ++b) {
      if (g.stopped_at_eos[b] != 0) continue;  // keeps feeding its EOS
      next[b] = samplers[b].next(host_span<const float>(logits.data() + b * V, V));
      g.tokens[b].push_back(next[b]);
      on_token(b, next[b]);
      if (o.eos && next[b] == *o.eos) {
        g.stopped_at_eos[b] = 1;
      } else {
        running = true;
      }
    }
    if (!running || step + 1 >= o.max_new_tokens) break;
    logits = checked(s.decode(make_host_span(std::as_const(next))), "decode");
  }
  return g;
}

}  // namespace dynllava
