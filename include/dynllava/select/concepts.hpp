// SPDX-License-Identifier: Apache-2.0
/// @file concepts.hpp
/// @brief The `token_selector` concept and its host models: budgeted top-k, score threshold,
/// 2-way logit argmax.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>
#include <dynllava/select/topk_types.hpp>

#include <concepts>
#include <cstdint>
#include <utility>
#include <vector>

namespace dynllava {

/// What a device `token_selector` returns: its count is in device memory, not known on the host.
inline constexpr index_t kept_count_on_device = -1;

/// @brief A token selector turns a ragged batch of per-token inputs into kept positions.
///
/// Requirements, for `const S& s`, a tag `tag` of type `Tag`, an input `in` of type `Input` (a
/// view in `execution_space_t<Tag>`), and `indptr` (`span_for<Tag, index_t>`, `[batch + 1]`) and
/// `positions` (`span_for<Tag, index_t>`, one entry per input token):
///   1. `s.select(tag, in, indptr, positions)` returns `index_t`: the number of kept tokens when
///      the host knows it without waiting (host tag), else `kept_count_on_device` (a device tag:
///      the count is `indptr[batch]` in device memory, valid once the stream gets there);
///   2. it writes kept positions per sequence in CSR form, local to each sequence and strictly
///      ascending; one output slot per input token is always enough;
///   3. the decision is a pure function of `s` and `in` (deterministic, no hidden state), and
///      the host and device models of one rule decide identically;
///   4. invalid arguments throw `dynllava::error` and write nothing the caller may rely on;
///      a device model that finds its input invalid on the device writes an all-zero `indptr`
///      and reports it through a device flag instead.
template <class S, class Tag, class Input>
concept token_selector = execution_tag<Tag> &&
    requires(const S& s, Tag tag, const Input& in, span_for<Tag, index_t> indptr,
             span_for<Tag, index_t> positions) {
  { s.select(tag, in, indptr, positions) } -> std::same_as<index_t>;
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

namespace cpu {

/// @brief Runs any host `token_selector` and returns its kept positions (owning CSR).
/// @param batch, tokens the number of sequences and of input tokens in `in`
template <class S, class Input>
requires token_selector<S, host_t, Input> host_selection select_kept(const S& selector,
                                                                     const Input& in,
                                                                     std::size_t batch,
                                                                     std::size_t tokens) {
  host_selection out;
  out.indptr.assign(batch + 1, 0);
  out.positions.resize(tokens);
  out.positions.resize(static_cast<std::size_t>(
      selector.select(host, in, make_host_span(out.indptr), make_host_span(out.positions))));
  return out;
}

}  // namespace cpu

static_assert(token_selector<budgeted_topk, host_t, host_ragged<const float>>);
static_assert(token_selector<score_threshold, host_t, host_ragged<const float>>);
static_assert(token_selector<logit_argmax, host_t, ragged_logits<host_space>>);
static_assert(!token_selector<logit_argmax, host_t, host_ragged<const float>>);

}  // namespace dynllava
