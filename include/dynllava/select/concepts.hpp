// SPDX-License-Identifier: Apache-2.0
/// @file concepts.hpp
/// @brief The `token_selector` concept and its host models: budgeted top-k, score threshold,
/// 2-way logit argmax.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>
#include <dynllava/select/topk_types.hpp>

#include <concepts>
#include <cstdint>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief A token selector turns a ragged batch of per-token inputs into kept positions.
///
/// Requirements, for a selector `s` of type `S`, an input `in` of type `Input`, and host spans
/// `indptr` (`[batch + 1]`) and `positions` (one entry per input token):
///   1. `s.select(host, in, indptr, positions)` returns the number of kept tokens as `index_t`;
///   2. it writes kept positions per sequence in CSR form, local to each sequence and strictly
///      ascending; one output slot per input token is always enough;
///   3. the decision is a pure function of `s` and `in` (deterministic, no hidden state);
///   4. invalid input throws `dynllava::error` and writes nothing the caller may rely on.
template <class S, class Input>
concept token_selector = requires(const S& s, const Input& in, host_span<index_t> indptr,
                                  host_span<index_t> positions) {
  { s.select(host, in, indptr, positions) } -> std::same_as<index_t>;
};

/// Keeps each sequence's `k_b` best-scoring tokens (the Dynamic-LLaVA prefill rule).
struct budgeted_topk {
  topk_budget<host_space> budget = topk_budget<host_space>::keep_ratio(1.0);
  topk_options options{};

  index_t select(host_t, host_ragged<const float> scores, host_span<index_t> indptr,
                 host_span<index_t> positions) const {
    return cpu::topk(scores, budget, indptr, positions, options);
  }
};

/// Keeps tokens whose score is strictly above `threshold`.
struct score_threshold {
  float threshold = 0.0f;

  index_t select(host_t, host_ragged<const float> scores, host_span<index_t> indptr,
                 host_span<index_t> positions) const {
    std::vector<std::uint8_t> keep(scores.values.size());
    cpu::threshold_gate(scores, threshold, make_host_span(keep));
    return cpu::mask_to_positions(scores.indptr, make_host_span(std::as_const(keep)), indptr,
                                  positions);
  }
};

/// Keeps tokens whose 2-way logits say keep: `logit0 > logit1` (the Dynamic-LLaVA decode rule).
struct logit_argmax {
  index_t select(host_t, ragged_logits<host_space> logits, host_span<index_t> indptr,
                 host_span<index_t> positions) const {
    std::vector<std::uint8_t> keep(logits.tokens());
    cpu::argmax_gate(logits, make_host_span(keep));
    return cpu::mask_to_positions(logits.indptr, make_host_span(std::as_const(keep)), indptr,
                                  positions);
  }
};

static_assert(token_selector<budgeted_topk, host_ragged<const float>>);
static_assert(token_selector<score_threshold, host_ragged<const float>>);
static_assert(token_selector<logit_argmax, ragged_logits<host_space>>);
static_assert(!token_selector<logit_argmax, host_ragged<const float>>);

}  // namespace dynllava
