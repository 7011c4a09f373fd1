// SPDX-License-Identifier: Apache-2.0
/// @file h2o_scorer.hpp
/// @brief Training-free baseline (H2O, "heavy hitters"): each cached token's score is the
/// attention mass it has received so far, summed over heads and queries, updated every step.
///
/// State per sequence: one accumulator per tracked (cached) token, in cache order. A decode step
/// appends the new token(s) (`append`), adds that step's attention probabilities
/// (`accumulate`), and after an eviction keeps the survivors' accumulators (`retain`). The KV
/// retention policy that ranks by these scores lives in kvcache/ (a later component).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/score/concepts.hpp>

#include <cstddef>
#include <vector>

namespace dynllava {

class h2o_scorer {
 public:
  /// Tracks `batch` sequences, each with no token yet.
  explicit h2o_scorer(std::size_t batch = 0) : acc_(batch), lengths_(batch, 0) {}

  std::size_t batch() const noexcept { return acc_.size(); }
  /// Tokens tracked for sequence `b`.
  index_t tracked(std::size_t b) const noexcept { return lengths_[b]; }
  /// Tokens tracked per sequence (`[batch]`, host; valid while the scorer lives).
  host_span<const index_t> lengths() const noexcept { return make_host_span(lengths_); }

  /// Starts tracking `counts[b]` new tokens at the end of each sequence, with score 0.
  /// @throws dynllava::error on a wrong size or a negative count.
  void append(host_t, host_span<const index_t> counts) {
    DYNLLAVA_EXPECTS(counts.size() == acc_.size(),
                     "h2o_scorer::append: counts must have one entry per sequence ({}), got {}",
                     acc_.size(), counts.size());
    for (std::size_t b = 0; b < acc_.size(); ++b) {  // validate everything before changing state
      DYNLLAVA_EXPECTS(counts[b] >= 0, "h2o_scorer::append: counts[{}] must be >= 0, got {}", b,
                       counts[b]);
    }
    for (std::size_t b = 0; b < acc_.size(); ++b) {
      acc_[b].resize(acc_[b].size() + static_cast<std::size_t>(counts[b]), 0.0);
      lengths_[b] = static_cast<index_t>(acc_[b].size());
    }
  }

  /// @brief Adds attention mass.
  /// @param[in] probs ragged host: sequence `b`'s values are a row-major `[rows, tracked(b)]`
  ///            block (rows = heads x queries of this step; any number, 0 included)
  /// @throws dynllava::error when a block is not a whole number of rows of `tracked(b)`.
  void accumulate(host_t, host_ragged<const float> probs) {
    validate(probs, "h2o_scorer::accumulate: probs");
    DYNLLAVA_EXPECTS(probs.batch() == acc_.size(),
                     "h2o_scorer::accumulate: probs cover {} sequences, expected {}", probs.batch(),
                     acc_.size());
    for (std::size_t b = 0; b < acc_.size(); ++b) {
      const auto n = acc_[b].size();
      const auto len = static_cast<std::size_t>(probs.length(b));
      DYNLLAVA_EXPECTS(n == 0 ? len == 0 : len % n == 0,
                       "h2o_scorer::accumulate: sequence {} gives {} probabilities, not a whole "
                       "number of rows of its {} tracked tokens",
                       b, len, n);
    }
    for (std::size_t b = 0; b < acc_.size(); ++b) {
      const auto n = acc_[b].size();
      const auto len = static_cast<std::size_t>(probs.length(b));
      const auto row = probs.row(b);
      for (std::size_t i = 0; i < len; ++i) acc_[b][i % n] += row[i];
    }
  }

  /// @brief Keeps only the tracked tokens at `kept` (positions local to each sequence, ascending).
  /// @throws dynllava::error on a wrong batch, an out-of-range or non-ascending position.
  void retain(host_t, host_ragged<const index_t> kept) {
    validate(kept, "h2o_scorer::retain: kept");
    DYNLLAVA_EXPECTS(kept.batch() == acc_.size(),
                     "h2o_scorer::retain: kept covers {} sequences, expected {}", kept.batch(),
                     acc_.size());
    for (std::size_t b = 0; b < acc_.size(); ++b) {
      index_t prev = -1;
      for (index_t p : kept.row(b)) {
        DYNLLAVA_EXPECTS(p > prev && static_cast<std::size_t>(p) < acc_[b].size(),
                         "h2o_scorer::retain: kept position {} of sequence {} must ascend and be "
                         "below its {} tracked tokens",
                         p, b, acc_[b].size());
        prev = p;
      }
    }
    for (std::size_t b = 0; b < acc_.size(); ++b) {
      std::vector<double> next;
      for (index_t p : kept.row(b)) next.push_back(acc_[b][static_cast<std::size_t>(p)]);
      acc_[b] = std::move(next);
      lengths_[b] = static_cast<index_t>(acc_[b].size());
    }
  }

  /// @brief As a `token_scorer`: the candidates are the tracked tokens themselves, so `hidden`
  /// must list `tracked(b)` rows for each sequence (their contents are not used) and each gets
  /// its accumulated attention.
  /// @throws dynllava::error when the rows do not match the tracked tokens.
  void score(host_t, host_ragged_rows<const float> hidden, host_span<float> out) const {
    validate(hidden, "h2o_scorer::score: hidden");
    DYNLLAVA_EXPECTS(hidden.batch() == acc_.size(), "h2o_scorer::score: {} sequences, expected {}",
                     hidden.batch(), acc_.size());
    for (std::size_t b = 0; b < acc_.size(); ++b) {
      DYNLLAVA_EXPECTS(static_cast<std::size_t>(hidden.length(b)) == acc_[b].size(),
                       "h2o_scorer::score: sequence {} lists {} rows but tracks {} tokens", b,
                       hidden.length(b), acc_[b].size());
    }
    scores(host, out);
  }

  /// Writes every tracked token's accumulated attention, sequence by sequence.
  /// @throws dynllava::error when `out` does not have one entry per tracked token.
  void scores(host_t, host_span<float> out) const {
    std::size_t total = 0;
    for (const auto& a : acc_) total += a.size();
    DYNLLAVA_EXPECTS(out.size() == total,
                     "h2o_scorer::scores: out must have one entry per tracked token ({}), got {}",
                     total, out.size());
    std::size_t o = 0;
    for (const auto& a : acc_) {
      for (double v : a) out[o++] = static_cast<float>(v);
    }
  }

 private:
  std::vector<std::vector<double>> acc_;
  std::vector<index_t> lengths_;  // acc_[b].size(), contiguous for lengths()
};
static_assert(stateful_token_scorer<h2o_scorer, host_t>);

}  // namespace dynllava
