// SPDX-License-Identifier: Apache-2.0
/// @file topk.hpp
/// @brief Budgeted top-k per sequence of a ragged batch, on the CPU (the reference twin).
///
/// Each sequence keeps its `k_b` best tokens by ranking key (score descending, ties by position,
/// NaN lowest; see core/ranking_key.hpp) and reports their positions in ascending order. The
/// per-sequence select is a byte-radix select (select/radix_select.hpp). The CUDA backend
/// selects bit-identical sets.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/select/radix_select.hpp>
#include <dynllava/select/topk_types.hpp>

#include <cstddef>

namespace dynllava {

/// @brief Checks a budget against a host ragged batch and returns sequence `b`'s budget.
/// @throws dynllava::error naming the sequence and the values when `k_b` is out of `[0, n_b]`.
inline index_t budget_of(const topk_budget<host_space>& budget, std::size_t b, index_t n) {
  switch (budget.kind) {
    case budget_kind::ratio:
      return ratio_budget(n, budget.ratio);
    case budget_kind::count:
      DYNLLAVA_EXPECTS(budget.count <= n,
                       "topk: k ({}) exceeds the number of candidates ({}) of sequence {}",
                       budget.count, n, b);
      return budget.count;
    case budget_kind::per_sequence:
      DYNLLAVA_EXPECTS(budget.counts[b] >= 0 && budget.counts[b] <= n,
                       "topk: counts[{}] must be in [0, {}] (the sequence's candidates), got {}", b,
                       n, budget.counts[b]);
      return budget.counts[b];
  }
  DYNLLAVA_FAIL("topk: unknown budget kind {}", static_cast<int>(budget.kind));
}

/// @brief Validates a budget's batch-independent fields (ratio range, count sign, counts size).
/// @throws dynllava::error naming the field and the expected versus actual value.
inline void validate_budget(const topk_budget<host_space>& budget, std::size_t batch) {
  switch (budget.kind) {
    case budget_kind::ratio:
      DYNLLAVA_EXPECTS(budget.ratio >= 0.0 && budget.ratio <= 1.0,
                       "topk: ratio must be in [0, 1], got {}", budget.ratio);
      return;
    case budget_kind::count:
      DYNLLAVA_EXPECTS(budget.count >= 0, "topk: k must be >= 0, got {}", budget.count);
      return;
    case budget_kind::per_sequence:
      DYNLLAVA_EXPECTS(budget.counts.size() == batch,
                       "topk: counts must have one entry per sequence ({}), got {}", batch,
                       budget.counts.size());
      return;
  }
  DYNLLAVA_FAIL("topk: unknown budget kind {}", static_cast<int>(budget.kind));
}

namespace cpu {

/// Reusable scratch of the CPU top-k; keep one per thread to make repeated calls allocation-free
/// (it grows to the longest sequence seen).
struct topk_workspace {
  radix_select_scratch radix;
};

/// @brief Phase 1: per-sequence kept counts as CSR offsets. Validates every input.
/// @param[in] scores ragged host scores, one per candidate token
/// @param[in] budget how many tokens each sequence keeps
/// @param[out] out_indptr [batch + 1] host offsets of the kept positions
/// @return total kept tokens, `out_indptr[batch]`
/// @throws dynllava::error on an invalid indptr, ratio outside [0, 1] or NaN, k < 0 or k > n_b,
///         a wrongly sized `counts` or `out_indptr`.
inline index_t topk_plan(host_ragged<const float> scores, const topk_budget<host_space>& budget,
                         host_span<index_t> out_indptr) {
  validate(scores, "topk: scores");
  const std::size_t batch = scores.batch();
  validate_budget(budget, batch);
  DYNLLAVA_EXPECTS(out_indptr.size() == batch + 1,
                   "topk: out_indptr must have batch + 1 = {} entries, got {}", batch + 1,
                   out_indptr.size());
  out_indptr[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    out_indptr[b + 1] = out_indptr[b] + budget_of(budget, b, scores.length(b));
  }
  return out_indptr[batch];
}

/// @brief Budgeted top-k per sequence.
/// @param[in] scores ragged host scores, one per candidate token
/// @param[in] budget how many tokens each sequence keeps (see `topk_budget`)
/// @param[out] out_indptr [batch + 1] host offsets of the kept positions
/// @param[out] out_positions [>= total kept] host; each sequence's kept positions (local to
///             the sequence), ascending. `scores.values.size()` entries always suffice.
/// @param[in] options tie-break rule
/// @param[in,out] ws reusable scratch
/// @return total kept tokens
/// @throws dynllava::error as `topk_plan`, and when `out_positions` is too small.
inline index_t topk(host_ragged<const float> scores, const topk_budget<host_space>& budget,
                    host_span<index_t> out_indptr, host_span<index_t> out_positions,
                    topk_options options, topk_workspace& ws) {
  const index_t total = topk_plan(scores, budget, out_indptr);
  DYNLLAVA_EXPECTS(out_positions.size() >= static_cast<std::size_t>(total),
                   "topk: out_positions must hold at least {} entries (the kept tokens), got {}",
                   total, out_positions.size());
  for (std::size_t b = 0; b < scores.batch(); ++b) {
    const index_t n = scores.length(b);
    const index_t k = out_indptr[b + 1] - out_indptr[b];
    index_t* out = out_positions.data() + out_indptr[b];
    if (k == 0) continue;
    if (k == n) {  // everything is kept: no ranking needed
      for (index_t i = 0; i < n; ++i) out[i] = i;
      continue;
    }
    select_top_positions(
        scores.row(b), k, options.tie,
        out_positions.subspan(static_cast<std::size_t>(out_indptr[b]), static_cast<std::size_t>(k)),
        ws.radix);
  }
  return total;
}

/// Budgeted top-k with a temporary scratch. @see topk
inline index_t topk(host_ragged<const float> scores, const topk_budget<host_space>& budget,
                    host_span<index_t> out_indptr, host_span<index_t> out_positions,
                    topk_options options = {}) {
  topk_workspace ws;
  return topk(scores, budget, out_indptr, out_positions, options, ws);
}

/// Budgeted top-k returning an owning selection. @see topk
inline host_selection topk(host_ragged<const float> scores, const topk_budget<host_space>& budget,
                           topk_options options = {}) {
  host_selection sel;
  sel.indptr.resize(scores.batch() + 1);
  sel.positions.resize(scores.values.size());
  const index_t total =
      topk(scores, budget, make_host_span(sel.indptr), make_host_span(sel.positions), options);
  sel.positions.resize(static_cast<std::size_t>(total));
  return sel;
}

}  // namespace cpu

/// Execution-tag entry point: budgeted top-k on the host. @see cpu::topk
inline index_t topk(host_t, host_ragged<const float> scores, const topk_budget<host_space>& budget,
                    host_span<index_t> out_indptr, host_span<index_t> out_positions,
                    topk_options options = {}) {
  return cpu::topk(scores, budget, out_indptr, out_positions, options);
}

}  // namespace dynllava
