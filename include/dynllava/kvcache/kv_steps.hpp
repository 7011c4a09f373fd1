// SPDX-License-Identifier: Apache-2.0
/// @file kv_steps.hpp
/// @brief The arithmetic of the CUDA KV-cache kernels (kvcache/cuda/) as host/device functions:
/// page counts, the storage row of a token in a paged or contiguous layer, the pages an append
/// takes and a compaction frees, the order in which a free stack hands out and takes back pages
/// (the host `page_pool`'s LIFO order), and StreamingLLM's kept positions. The CPU tests check
/// them against the host caches and policies.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>

#include <cstddef>

namespace dynllava::detail {

/// Pages holding `tokens` tokens of `page_size` per page.
DYNLLAVA_HOST_DEVICE constexpr index_t pages_for(index_t tokens, index_t page_size) noexcept {
  return tokens <= 0 ? 0 : (tokens - 1) / page_size + 1;
}

/// Tokens in the last page of a sequence of `tokens` (0 for an empty one), FlashInfer's
/// `last_page_len`.
DYNLLAVA_HOST_DEVICE constexpr index_t last_page_length(index_t tokens,
                                                        index_t page_size) noexcept {
  return tokens <= 0 ? 0 : (tokens - 1) % page_size + 1;
}

/// New pages an append of `added` tokens to a sequence holding `held` takes.
DYNLLAVA_HOST_DEVICE constexpr index_t pages_taken(index_t held, index_t added,
                                                   index_t page_size) noexcept {
  return pages_for(held + added, page_size) - pages_for(held, page_size);
}

/// Pages a compaction from `held` to `kept` tokens gives back.
DYNLLAVA_HOST_DEVICE constexpr index_t pages_freed(index_t held, index_t kept,
                                                   index_t page_size) noexcept {
  return pages_for(held, page_size) - pages_for(kept, page_size);
}

/// @brief Storage row of token `i` of a sequence in a paged layer whose page list is `pages`
/// (page ids in token order).
DYNLLAVA_HOST_DEVICE constexpr std::size_t paged_row(const index_t* pages, index_t i,
                                                     index_t page_size) noexcept {
  return static_cast<std::size_t>(pages[i / page_size]) * static_cast<std::size_t>(page_size) +
         static_cast<std::size_t>(i % page_size);
}

/// @brief Storage row of token `i` of sequence `b` in a contiguous layer of `capacity` rows per
/// sequence.
DYNLLAVA_HOST_DEVICE constexpr std::size_t contiguous_row(std::size_t b, index_t i,
                                                          index_t capacity) noexcept {
  return b * static_cast<std::size_t>(capacity) + static_cast<std::size_t>(i);
}

/// @brief Index into a free stack of `free_count` pages (top at `free_count - 1`) of the page
/// that the `j`-th allocation of a batch takes, allocations numbered in sequence order then page
/// order (what the host `page_pool` hands out when the sequences append in order).
/// @pre `j < free_count`.
DYNLLAVA_HOST_DEVICE constexpr index_t popped_slot(index_t free_count, index_t j) noexcept {
  return free_count - 1 - j;
}

/// @brief Index into a free stack of `free_count` pages where the `j`-th release of a batch
/// goes: releases numbered in sequence order, each sequence from its last page backwards (what
/// the host `paged_kv_cache::retain` pushes when called for the sequences in order).
DYNLLAVA_HOST_DEVICE constexpr index_t pushed_slot(index_t free_count, index_t j) noexcept {
  return free_count + j;
}

/// How many tokens StreamingLLM keeps of `held`: all when `held <= sinks + window`.
DYNLLAVA_HOST_DEVICE constexpr index_t streaming_kept_count(index_t held, index_t sinks,
                                                            index_t window) noexcept {
  return held <= sinks + window ? held : sinks + window;
}

/// @brief Local position of StreamingLLM's `j`-th kept token (ascending): the `sinks` first
/// tokens, then the `window` newest.
/// @pre `j < streaming_kept_count(held, sinks, window)`.
DYNLLAVA_HOST_DEVICE constexpr index_t streaming_kept_position(index_t held, index_t sinks,
                                                               index_t window, index_t j) noexcept {
  if (held <= sinks + window || j < sinks) return j;
  return held - window + (j - sinks);
}

/// @brief H2O's budget of a (layer, sequence): every held token below `uncompressed_layers`,
/// else `min(held, max(recent, floor(ratio * appended)))`. Shared by `h2o_policy` and the CUDA
/// kept-list kernel. @pre `0 <= ratio <= 1`.
DYNLLAVA_HOST_DEVICE index_t h2o_budget(index_t layer, index_t held, index_t appended, double ratio,
                                        index_t recent, index_t uncompressed_layers) noexcept {
  if (layer < uncompressed_layers) return held;
  const index_t by_ratio = ratio_budget(appended, ratio);
  const index_t floor = recent > by_ratio ? recent : by_ratio;
  return held < floor ? held : floor;
}

/// @brief How H2O splits a (layer, sequence)'s budget `keep` (`h2o_budget`) of `held` tokens: the
/// `window = min(recent, keep)` newest tokens, and `heavy = keep - window` heavy hitters chosen
/// among the `older = held - window` tokens before them. Shared by `h2o_policy::retain` and the
/// CUDA plan kernel. @pre `0 <= keep <= held`, `recent >= 0`.
struct h2o_split {
  index_t window = 0;
  index_t older = 0;
  index_t heavy = 0;
};
DYNLLAVA_HOST_DEVICE constexpr h2o_split split_h2o_budget(index_t held, index_t keep,
                                                          index_t recent) noexcept {
  const index_t window = recent < keep ? recent : keep;
  return {window, held - window, keep - window};
}

/// @brief Local position of H2O's `j`-th kept token when it is in the recent window (`j >=
/// heavy`): the kept list is the `heavy` heavy hitters (ascending) then the `kept - heavy` newest
/// of the `held` tokens. @pre `heavy <= j < kept <= held`.
DYNLLAVA_HOST_DEVICE constexpr index_t h2o_recent_position(index_t held, index_t kept,
                                                           index_t heavy, index_t j) noexcept {
  return held - (kept - heavy) + (j - heavy);
}

}  // namespace dynllava::detail
