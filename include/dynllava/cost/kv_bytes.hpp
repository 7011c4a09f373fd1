// SPDX-License-Identifier: Apache-2.0
/// @file kv_bytes.hpp
/// @brief KV-cache bytes held after a forward pass, from a config and a `cost::trace`.
#pragma once

#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/trace.hpp>

#include <cstdint>
#include <limits>

namespace dynllava::cost {

/// Bytes one token occupies in one layer's cache: keys and values,
/// `2 * heads * head_dim * kv_bytes_per_element` (= 2 C x 2 bytes in fp16 for LLaMA).
[[nodiscard]] constexpr std::int64_t kv_bytes_per_token_layer(const llava_sizes& config) noexcept {
  return 2 * config.attention_width() * config.kv_bytes_per_element;
}

/// KV-cache bytes held after the pass `t`: the sum over layers of
/// `kv_tokens[l] * kv_bytes_per_token_layer(config)`. Counts are batch totals already, so the
/// batch is included. Block or page rounding of a paged cache is not included.
/// @throws dynllava::error when the config or trace is invalid or the total overflows int64.
[[nodiscard]] inline std::int64_t kv_cache_bytes(const llava_sizes& config, const trace& t) {
  config.validate();
  validate(config, t);
  const std::int64_t per_token = kv_bytes_per_token_layer(config);
  const std::int64_t tokens = t.total_kv_tokens();
  DYNLLAVA_EXPECTS(tokens <= std::numeric_limits<std::int64_t>::max() / per_token,
                   "kv_cache_bytes: {} cached tokens x {} bytes overflows int64", tokens,
                   per_token);
  return tokens * per_token;
}

}  // namespace dynllava::cost
