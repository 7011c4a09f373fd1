// SPDX-License-Identifier: Apache-2.0
/// @file output_sweep.hpp
/// @brief Cost of a schedule against output length: decode FLOPs with and without KV cache
/// and the KV-cache bytes held (the data behind the paper's Figure 1).
#pragma once

#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/schedule.hpp>
#include <dynllava/cost/schedule_trace.hpp>

#include <cstdint>
#include <optional>
#include <vector>

namespace dynllava::cost {

/// Cost at output length `T`: the prompt and generated tokens `0 .. T-1` have been processed
/// (prefill, then decode steps `0 .. T-1`). Exact FLOPs (exact_flops.hpp), predictors included.
/// Without-KV-cache fields are empty for schedules that do not define that mode (H2O).
struct length_point {
  std::int64_t output_tokens = 0;              ///< T
  double prefill_flops = 0;                    ///< the prefill pass
  std::optional<double> step_flops_no_cache;   ///< decode step T without KV cache
  std::optional<double> total_flops_no_cache;  ///< prefill + steps 0 .. T-1 without KV cache
  double step_flops_kv_cache = 0;              ///< decode step T with KV cache
  double total_flops_kv_cache = 0;             ///< prefill + steps 0 .. T-1 with KV cache
  std::int64_t kv_cache_bytes = 0;             ///< held after step T-1 (after prefill if T = 0)
};

/// Costs at `T = 0, stride, 2 stride, ...` up to `max_output_tokens` (included when it is a
/// multiple of `stride`). Runs every step once, so it is linear in `max_output_tokens`.
/// @throws dynllava::error for invalid inputs, `max_output_tokens < 0` or `stride <= 0`.
[[nodiscard]] inline std::vector<length_point> cost_vs_output_length(
    const llava_sizes& config, const schedule& s, const request& req,
    std::int64_t max_output_tokens, std::int64_t stride, const count_options& options = {}) {
  DYNLLAVA_EXPECTS(max_output_tokens >= 0,
                   "cost_vs_output_length: max_output_tokens must be >= 0, got {}",
                   max_output_tokens);
  DYNLLAVA_EXPECTS(stride > 0, "cost_vs_output_length: stride must be > 0, got {}", stride);
  const bool no_cache = supports(s, pass_kind::decode_no_cache);
  const trace prefill = schedule_trace(config, s, req, pass_kind::prefill);
  const double prefill_flops = exact_flops(config, prefill, options).total();

  std::vector<length_point> points;
  double total_no_cache = prefill_flops;
  double total_kv = prefill_flops;
  std::int64_t held = kv_cache_bytes(config, prefill);
  for (std::int64_t t = 0;; ++t) {
    const trace kv_step = schedule_trace(config, s, req, pass_kind::decode_kv_cache, t);
    const double kv_flops = exact_flops(config, kv_step, options).total();
    std::optional<double> nc_flops;
    if (no_cache) {
      nc_flops = exact_flops(config, schedule_trace(config, s, req, pass_kind::decode_no_cache, t),
                             options)
                     .total();
    }
    if (t % stride == 0) {
      length_point pt;
      pt.output_tokens = t;
      pt.prefill_flops = prefill_flops;
      pt.step_flops_no_cache = nc_flops;
      if (no_cache) pt.total_flops_no_cache = total_no_cache;
      pt.step_flops_kv_cache = kv_flops;
      pt.total_flops_kv_cache = total_kv;
      pt.kv_cache_bytes = held;
      points.push_back(pt);
    }
    if (t == max_output_tokens) break;
    total_kv += kv_flops;
    if (nc_flops) total_no_cache += *nc_flops;
    held = kv_cache_bytes(config, kv_step);
  }
  return points;
}

}  // namespace dynllava::cost
