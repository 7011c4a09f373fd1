// SPDX-License-Identifier: Apache-2.0
/// @file fastv_scorer.hpp
/// @brief Training-free baseline (FastV): score of a candidate = attention that the last token
/// pays to it at layer K, averaged over heads.
///
/// Computed from that layer's query of the last token and the keys of the context (RoPE already
/// applied), so no attention matrix is materialised: per head `h`,
/// `p_h = softmax_j(q_h . k_hj / sqrt(head_dim))` over **all** context keys the last token
/// attends to (its causal context, itself included), and the score of candidate `j` is
/// `mean_h p_h[j]`. Ranking the image candidates by it and keeping 25% is FastV (K = 3).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/score/concepts.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace dynllava {

/// FastV's scorer: models `attention_scorer<fastv_scorer, host_t>`.
struct fastv_scorer {
  index_t heads = 32;
  index_t head_dim = 128;

  /// The width of the queries and keys it reads: `heads * head_dim`.
  long long width() const noexcept { return static_cast<long long>(heads) * head_dim; }

  /// @param[in] queries [batch, heads * head_dim] host: the last token's query per sequence
  /// @param[in] keys ragged `[context, heads * head_dim]` host: keys the last token attends to
  /// @param[in] candidates ragged host: context rows (local to each sequence) to score
  /// @param[out] scores [candidates] host: head-averaged attention probability
  /// @throws dynllava::error on inconsistent shapes, an empty context with candidates, or a
  ///         candidate outside the context.
  void score(host_t, host_span<const float> queries, host_ragged_rows<const float> keys,
             host_ragged<const index_t> candidates, host_span<float> scores) const {
    DYNLLAVA_EXPECTS(
        heads > 0 && head_dim > 0 &&
            static_cast<long long>(heads) * head_dim <= std::numeric_limits<index_t>::max(),
        "fastv_scorer: heads ({}) and head_dim ({}) must be > 0 and their product fit "
        "index_t",
        heads, head_dim);
    const index_t width = heads * head_dim;
    DYNLLAVA_EXPECTS(keys.width == width,
                     "fastv_scorer: keys must have width heads * head_dim = "
                     "{}, got {}",
                     width, keys.width);
    validate(keys, "fastv_scorer: keys");
    validate(candidates, "fastv_scorer: candidates");
    const std::size_t batch = keys.batch();
    DYNLLAVA_EXPECTS(queries.size() == batch * static_cast<std::size_t>(width),
                     "fastv_scorer: queries must be [batch = {}, {}] = {} values, got {}", batch,
                     width, batch * static_cast<std::size_t>(width), queries.size());
    DYNLLAVA_EXPECTS(candidates.batch() == batch,
                     "fastv_scorer: candidates cover {} sequences, keys {}", candidates.batch(),
                     batch);
    DYNLLAVA_EXPECTS(scores.size() == candidates.values.size(),
                     "fastv_scorer: scores must have one entry per candidate ({}), got {}",
                     candidates.values.size(), scores.size());
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const auto hd = static_cast<std::size_t>(head_dim);
    std::vector<double> prob;
    for (std::size_t b = 0; b < batch; ++b) {
      const auto n = static_cast<std::size_t>(keys.length(b));
      for (index_t c = candidates.indptr[b]; c < candidates.indptr[b + 1]; ++c) {
        const index_t j = candidates.values[static_cast<std::size_t>(c)];
        DYNLLAVA_EXPECTS(j >= 0 && static_cast<std::size_t>(j) < n,
                         "fastv_scorer: candidate {} of sequence {} is outside its {} context rows",
                         j, b, n);
      }
      if (candidates.length(b) == 0) continue;
      prob.assign(n, 0.0);
      const float* q = queries.data() + b * static_cast<std::size_t>(width);
      const std::size_t first = static_cast<std::size_t>(keys.indptr[b]);
      std::vector<float> logit(n);
      for (std::size_t h = 0; h < static_cast<std::size_t>(heads); ++h) {
        float mx = -INFINITY;
        for (std::size_t j = 0; j < n; ++j) {
          logit[j] = dot(q + h * hd, keys.row(first + j) + h * hd, hd) * scale;
          mx = std::max(mx, logit[j]);
        }
        double sum = 0.0;
        for (std::size_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(logit[j] - mx));
        for (std::size_t j = 0; j < n; ++j) {
          prob[j] += std::exp(static_cast<double>(logit[j] - mx)) / sum;
        }
      }
      for (index_t c = candidates.indptr[b]; c < candidates.indptr[b + 1]; ++c) {
        const auto j = static_cast<std::size_t>(candidates.values[static_cast<std::size_t>(c)]);
        scores[static_cast<std::size_t>(c)] = static_cast<float>(prob[j] / heads);
      }
    }
  }

 private:
  /// `a . b` over `n` floats, accumulated in double (one query row against one key row: a dot
  /// product, not a GEMM; keeps this scorer in the host tier).
  static float dot(const float* a, const float* b, std::size_t n) noexcept {
    double acc = 0.0;
    for (std::size_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
    return static_cast<float>(acc);
  }
};
static_assert(attention_scorer<fastv_scorer, host_t>);

}  // namespace dynllava
