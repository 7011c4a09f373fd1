// SPDX-License-Identifier: Apache-2.0
/// @file l2_norm_scorer.hpp
/// @brief Training-free baseline: score = L2 norm of the token's hidden state.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/score/concepts.hpp>

#include <cmath>

namespace dynllava {

struct l2_norm_scorer {
  /// @param[in] hidden ragged `[tokens, H]` host rows
  /// @param[out] scores [tokens] host: `||hidden[i]||_2` (accumulated in double)
  /// @throws dynllava::error on mismatched sizes.
  void score(host_t, host_ragged_rows<const float> hidden, host_span<float> scores) const {
    validate(hidden, "l2_norm_scorer: hidden");
    DYNLLAVA_EXPECTS(scores.size() == hidden.rows(),
                     "l2_norm_scorer: scores must have one entry per token ({}), got {}",
                     hidden.rows(), scores.size());
    for (std::size_t r = 0; r < hidden.rows(); ++r) {
      const float* x = hidden.row(r);
      double s = 0.0;
      for (index_t c = 0; c < hidden.width; ++c) s += static_cast<double>(x[c]) * x[c];
      scores[r] = static_cast<float>(std::sqrt(s));
    }
  }
};
static_assert(token_scorer<l2_norm_scorer, host_t>);

}  // namespace dynllava
