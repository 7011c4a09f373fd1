// SPDX-License-Identifier: Apache-2.0
/// @file token_decisions.hpp
/// @brief `token_decisions`: what a predictor saw and decided at one decision point (the image
/// top-k of a prompt, the online gate of a decode step, the output selection of a step without
/// KV cache), for visualisation and an engine's logs.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynllava {

/// @brief One decision point over a ragged batch of candidate tokens. Host memory, owning.
/// Candidates are local to each sequence's candidate list of their kind (`cpu::candidate_rows`),
/// in row order.
struct token_decisions {
  std::vector<index_t> indptr{0};  ///< [batch + 1] CSR over the candidates of each sequence
  std::vector<float> logits;       ///< [candidates, 2] predictor logits (channel 0 = keep);
                                   ///< empty when no 2-way predictor ranked them (FastV, keep-all)
  std::vector<float> scores;       ///< [candidates] what ranked them: `logit0 - logit1` (the
                                   ///< margin), or FastV's attention; empty when nothing ranked
  std::vector<std::uint8_t> keep;  ///< [candidates] 1 = kept

  std::size_t batch() const noexcept { return indptr.empty() ? 0 : indptr.size() - 1; }
  std::size_t candidates() const noexcept { return keep.size(); }

  /// The kept candidates as positions local to each sequence, ascending.
  host_selection kept() const {
    host_selection s;
    s.indptr.assign(indptr.size(), 0);
    for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
      for (index_t i = indptr[b]; i < indptr[b + 1]; ++i) {
        if (keep[static_cast<std::size_t>(i)] != 0) s.positions.push_back(i - indptr[b]);
      }
      s.indptr[b + 1] = static_cast<index_t>(s.positions.size());
    }
    return s;
  }

  /// Records `kept` (positions per sequence over candidates `cand_indptr`) as keep flags.
  void set_kept(const std::vector<index_t>& cand_indptr, const host_selection& kept_sel) {
    indptr = cand_indptr;
    keep.assign(static_cast<std::size_t>(indptr.back()), 0);
    for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
      for (index_t i = kept_sel.indptr[b]; i < kept_sel.indptr[b + 1]; ++i) {
        keep[static_cast<std::size_t>(indptr[b] +
                                      kept_sel.positions[static_cast<std::size_t>(i)])] = 1;
      }
    }
  }

  /// Per sequence, `a`'s candidates then `b`'s (same batch; both with logits or neither, and both
  /// with scores or neither, else the result has none of that field).
  static token_decisions concat_by_sequence(const token_decisions& a, const token_decisions& b) {
    token_decisions out;
    const bool logits =
        a.logits.size() == 2 * a.candidates() && b.logits.size() == 2 * b.candidates();
    const bool scores = a.scores.size() == a.candidates() && b.scores.size() == b.candidates();
    for (std::size_t s = 0; s < a.batch(); ++s) {
      for (const token_decisions* d : {&a, &b}) {
        const auto first = static_cast<std::size_t>(d->indptr[s]);
        const auto last = static_cast<std::size_t>(d->indptr[s + 1]);
        out.keep.insert(out.keep.end(), d->keep.begin() + static_cast<std::ptrdiff_t>(first),
                        d->keep.begin() + static_cast<std::ptrdiff_t>(last));
        if (logits) {
          out.logits.insert(out.logits.end(),
                            d->logits.begin() + static_cast<std::ptrdiff_t>(2 * first),
                            d->logits.begin() + static_cast<std::ptrdiff_t>(2 * last));
        }
        if (scores) {
          out.scores.insert(out.scores.end(),
                            d->scores.begin() + static_cast<std::ptrdiff_t>(first),
                            d->scores.begin() + static_cast<std::ptrdiff_t>(last));
        }
      }
      out.indptr.push_back(static_cast<index_t>(out.keep.size()));
    }
    return out;
  }

  /// Sets `scores` to the margins `logit0 - logit1` of `logits`.
  void margins_from_logits() {
    scores.resize(logits.size() / 2);
    for (std::size_t i = 0; i < scores.size(); ++i)
      scores[i] = keep_margin(logits[2 * i], logits[2 * i + 1]);
  }
};

}  // namespace dynllava
