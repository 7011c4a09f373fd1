// SPDX-License-Identifier: Apache-2.0
/// @file device_policies.cuh
/// @brief The CUDA models of `kv_policy<P, cuda::on_stream>` (kvcache/kv_policy.hpp): the host
/// policies' twins. `admits` and `evicts` are the wrapped host policy's own (answered on the
/// host); `kept(exec, ...)` writes a whole layer's kept lists on `exec.stream` with the same
/// lists as the host policy's `kept`: keep-all for the full cache and the online gate,
/// `cuda::streaming_kept` for StreamingLLM, `cuda::h2o_kept` for H2O (in the caller's workspace
/// when `device_h2o_policy::temp` is set, so nothing is allocated; else in one allocated and freed
/// in stream order). Nothing synchronises with the host; shapes known on the host are checked
/// there and throw.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/stream_workspace.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/cuda/device_h2o.cuh>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>

#include <cstddef>
#include <limits>

namespace dynllava::cuda {

namespace detail {

/// Host-known shapes of `kv_policy` requirement 3 on the device.
/// @throws dynllava::error naming `who` and the argument.
inline void check_device_kept(const char* who, device_span<const index_t> held,
                              device_span<const index_t> appended,
                              device_span<index_t> out_indptr) {
  DYNLLAVA_EXPECTS(appended.size() == held.size() && out_indptr.size() == held.size() + 1,
                   "{}: appended and out_indptr must have batch = {} and batch + 1 entries, got "
                   "{} and {}",
                   who, held.size(), appended.size(), out_indptr.size());
}

}  // namespace detail

/// @brief A policy that never evicts (`full_cache_policy`, `online_gate_policy`) on CUDA:
/// `kept` writes `0 .. held[b] - 1` for every sequence (`out` must hold every held token).
template <class P>
requires host_kv_policy<P>
struct device_keep_all_policy {
  P policy{};  ///< the host policy: `admits` and `evicts` are its own

  bool admits(index_t l, bool keep) const noexcept { return policy.admits(l, keep); }
  bool evicts(index_t l) const noexcept { return policy.evicts(l); }

  /// `kv_policy` requirement 3: every held token stays (`scores` unused).
  /// @throws dynllava::error on a policy that evicts at `l` or mismatched shapes,
  ///         dynllava::cuda_error on a CUDA failure.
  void kept(on_stream exec, index_t l, device_span<const index_t> held,
            device_span<const index_t> appended, ragged_span<const float, device_space>,
            device_span<index_t> out_indptr, device_span<index_t> out) const {
    DYNLLAVA_EXPECTS(!policy.evicts(l),
                     "device_keep_all_policy::kept: the policy evicts at layer {}", l);
    detail::check_device_kept("device_keep_all_policy::kept", held, appended, out_indptr);
    // StreamingLLM's lists with a sink of every token: all held positions, nothing evicted
    DYNLLAVA_CUDA_TRY(
        streaming_kept(held, std::numeric_limits<index_t>::max(), 0, out_indptr, out, exec.stream));
  }
};
using device_full_cache_policy = device_keep_all_policy<full_cache_policy>;
using device_online_gate_policy = device_keep_all_policy<online_gate_policy>;

/// @brief StreamingLLM on CUDA: the first `sinks` and the `window` newest held tokens stay.
/// `out` must hold `min(held[b], sinks + window)` summed over the batch; when it does not,
/// nothing is written but `out_indptr[0] = -1`, which `cuda::retain` refuses.
struct device_streaming_policy {
  streaming_policy policy{};

  bool admits(index_t l, bool keep) const noexcept { return policy.admits(l, keep); }
  bool evicts(index_t l) const noexcept { return policy.evicts(l); }

  /// `kv_policy` requirement 3 (`scores` unused).
  void kept(on_stream exec, index_t, device_span<const index_t> held,
            device_span<const index_t> appended, ragged_span<const float, device_space>,
            device_span<index_t> out_indptr, device_span<index_t> out) const {
    policy.validate();
    detail::check_device_kept("device_streaming_policy::kept", held, appended, out_indptr);
    DYNLLAVA_CUDA_TRY(
        streaming_kept(held, policy.sinks, policy.window, out_indptr, out, exec.stream));
  }
};

/// @brief H2O on CUDA: the `recent` newest held tokens plus the heaviest hitters by accumulated
/// attention (ties to the earlier token), `h2o_budget` in all. Unlike the host policy, which
/// needs scores only where it evicts, `kept` always takes one score per held token. `kept` runs
/// in the caller's workspace when one is set (`temp`, sized by `workspace_bytes`: nothing is
/// allocated, as a captured decode step needs), else in one allocated and freed in stream order.
struct device_h2o_policy {
  h2o_policy policy{};
  index_t max_length = 0;      ///< host-known bound of every held length (e.g. the cache capacity)
  int* invalid = nullptr;      ///< device int or null: raised when the device finds the scores'
                               ///< offsets or a held length invalid (then `out_indptr[0]` is -1)
  void* temp = nullptr;        ///< device workspace of `kept`, or null (stream-ordered allocation)
  std::size_t temp_bytes = 0;  ///< its size

  bool admits(index_t l, bool keep) const noexcept { return policy.admits(l, keep); }
  bool evicts(index_t l) const noexcept { return policy.evicts(l); }

  /// Workspace bytes of `kept` for `batch` sequences holding `tokens` tokens in all (at most).
  /// @throws dynllava::error when `max_length` is out of range.
  std::size_t workspace_bytes(std::size_t batch, std::size_t tokens) const {
    DYNLLAVA_EXPECTS(max_length >= 0 && max_length <= dynllava::detail::topk_row_max,
                     "device_h2o_policy: max_length must be in [0, {}], got {}",
                     dynllava::detail::topk_row_max, max_length);
    std::size_t bytes = 0;
    const h2o_parameters p{policy.ratio, policy.recent, policy.uncompressed_layers};
    DYNLLAVA_CUDA_TRY(h2o_kept(
        nullptr, bytes, device_span<const index_t>(nullptr, batch),
        device_span<const index_t>(nullptr, batch),
        ragged_span<const float, device_space>{device_span<const index_t>(nullptr, batch + 1),
                                               device_span<const float>(nullptr, tokens)},
        0, p, max_length, device_span<index_t>(nullptr, batch + 1),
        device_span<index_t>(nullptr, tokens), nullptr, nullptr));
    return bytes;
  }

  /// `kv_policy` requirement 3: `scores` holds every held token's accumulated attention.
  /// @throws dynllava::error on bad settings or host-known shapes, dynllava::cuda_error on a
  ///         CUDA failure.
  void kept(on_stream exec, index_t l, device_span<const index_t> held,
            device_span<const index_t> appended, ragged_span<const float, device_space> scores,
            device_span<index_t> out_indptr, device_span<index_t> out) const {
    policy.validate();
    detail::check_device_kept("device_h2o_policy::kept", held, appended, out_indptr);
    DYNLLAVA_EXPECTS(scores.indptr.size() == held.size() + 1,
                     "device_h2o_policy::kept: scores must have one row per sequence ({}), got "
                     "indptr of {} entries",
                     held.size(), scores.indptr.size());
    DYNLLAVA_EXPECTS(out.size() >= scores.values.size(),
                     "device_h2o_policy::kept: out must hold the {} held tokens, got {}",
                     scores.values.size(), out.size());
    DYNLLAVA_EXPECTS(max_length >= 0 && max_length <= dynllava::detail::topk_row_max,
                     "device_h2o_policy::kept: max_length must be in [0, {}], got {}",
                     dynllava::detail::topk_row_max, max_length);
    const h2o_parameters p{policy.ratio, policy.recent, policy.uncompressed_layers};
    const auto run = [&](void* ws, std::size_t& bytes) {
      return h2o_kept(ws, bytes, held, appended, scores, l, p, max_length, out_indptr, out, invalid,
                      exec.stream);
    };
    if (temp == nullptr) {
      detail::with_stream_workspace(exec.stream, run);
      return;
    }
    std::size_t needed = 0;
    DYNLLAVA_CUDA_TRY(run(nullptr, needed));
    DYNLLAVA_EXPECTS(temp_bytes >= needed,
                     "device_h2o_policy::kept: the workspace must hold {} bytes for {} sequences "
                     "and {} tokens, got {}",
                     needed, held.size(), scores.values.size(), temp_bytes);
    std::size_t bytes = temp_bytes;
    DYNLLAVA_CUDA_TRY(run(temp, bytes));
  }
};

static_assert(kv_policy<device_full_cache_policy, on_stream>);
static_assert(kv_policy<device_online_gate_policy, on_stream>);
static_assert(kv_policy<device_streaming_policy, on_stream>);
static_assert(kv_policy<device_h2o_policy, on_stream>);
static_assert(!kv_policy<device_h2o_policy, host_t>);

}  // namespace dynllava::cuda

namespace dynllava {
/// The device H2O policy ranks held tokens by accumulated attention, like the host one.
template <>
inline constexpr bool kv_policy_needs_scores<cuda::device_h2o_policy> = true;
}  // namespace dynllava
