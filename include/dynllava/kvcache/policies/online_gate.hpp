// SPDX-License-Identifier: Apache-2.0
/// @file online_gate.hpp
/// @brief Dynamic-LLaVA's online KV gating: layers below the sparse layer cache every token;
/// layers at or above it cache a token only when the output predictor keeps it
/// (`logit0 > logit1`). Nothing is evicted afterwards: a decision never changes.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/kv_policy.hpp>

namespace dynllava {

struct online_gate_policy {
  index_t sparse_layer = 2;  ///< METHOD.md: l = 2

  /// @throws dynllava::error on a negative sparse layer.
  void validate() const {
    DYNLLAVA_EXPECTS(sparse_layer >= 0, "online_gate_policy: sparse_layer must be >= 0, got {}",
                     sparse_layer);
  }

  bool admits(index_t layer, bool keep) const noexcept { return layer < sparse_layer || keep; }
  /// Never evicts: a decision never changes.
  bool evicts(index_t) const noexcept { return false; }
  /// `kv_policy` requirement 3 on the host, sequence by sequence (`kv_policy.hpp`).
  void kept(host_t, index_t l, host_span<const index_t> held, host_span<const index_t> appended,
            host_ragged<const float> scores, host_span<index_t> out_indptr,
            host_span<index_t> out) const {
    detail::kept_by_sequence("online_gate_policy::kept", *this, l, held, appended, scores,
                             out_indptr, out);
  }
  index_t retain(index_t, kv_sequence_state s, host_span<const float>,
                 host_span<index_t> out) const {
    detail::check_retain_out("online_gate_policy", s, out);
    return detail::keep_all(s.held, out);
  }
};
static_assert(host_kv_policy<online_gate_policy>);

}  // namespace dynllava
