// SPDX-License-Identifier: Apache-2.0
/// @file run_summary.hpp
/// @brief The summary of one answer: image tokens kept, generated tokens that entered the KV
/// cache, KV bytes and TFLOPs of the cost model against dense, times and speed; as display rows
/// (the terminal and the Figure-6 page) and as JSON.
#pragma once

#include "cli_options.hpp"
#include "request_runner.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace dynllava::llava {

/// The figures of one answer. The cost and times are those of the batch it ran in.
struct run_summary {
  generation_settings settings;
  std::size_t batch_size = 1;
  std::size_t image_total = 0, image_kept = 0;
  std::size_t generated = 0;    ///< tokens generated (EOS included)
  std::size_t decided = 0;      ///< generated tokens fed back and gated (all but the newest)
  std::size_t kept = 0;         ///< of `decided`, those whose K/V entered the cache
  bool stopped_at_eos = false;  ///< false: generation stopped at `settings.max_new_tokens`
  run_cost cost;                ///< the whole batch's (`batch_size` requests)

  /// This request's generated tokens per second of the batch's prefill and decode.
  [[nodiscard]] double tokens_per_s() const noexcept;
};

[[nodiscard]] run_summary summarize(const generation_settings& settings, std::size_t batch_size,
                                    const sequence_result& r, const run_cost& cost);

/// (name, value) rows in display order.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> summary_rows(const run_summary& s);

/// Writes the rows as `name: value` lines.
void print_summary(std::ostream& out, const run_summary& s);

/// The summary as a JSON object (counts, bytes, TFLOPs, seconds).
[[nodiscard]] nlohmann::json summary_json(const run_summary& s);

}  // namespace dynllava::llava
