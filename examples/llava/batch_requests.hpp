// SPDX-License-Identifier: Apache-2.0
/// @file batch_requests.hpp
/// @brief `--batch FILE`: requests as JSON lines, grouped into ragged batches of requests whose
/// generation settings agree.
#pragma once

#include "cli_options.hpp"
#include "request_runner.hpp"

#include <cstddef>
#include <filesystem>
#include <vector>

namespace dynllava::llava {

/// One line of a batch file.
struct batch_entry {
  std::size_t line = 0;  ///< 1-based line number in the file
  request req;
  generation_settings settings;
};

/// @brief Reads a batch file: one JSON object per line (blank lines skipped) with `prompt`
/// (string, required), `image` (a path) or `images` (paths), and optionally `mode`, `kv_cache`
/// (`"on"`/`"off"` or a boolean), `max_new_tokens`, `temperature`, `top_p`, `seed`; absent
/// settings are `defaults` (the command line's). Relative image paths are taken from the current
/// folder, as `--image` does.
/// @throws dynllava::error naming `FILE:LINE` and the problem (not JSON, not an object, an
///         unknown key, a wrong type or value); nothing runs then.
[[nodiscard]] std::vector<batch_entry> read_batch_file(const std::filesystem::path& file,
                                                       const generation_settings& defaults);

/// At most this many requests run in one ragged batch.
inline constexpr std::size_t max_batch_requests = 16;

/// @brief Indices of `entries` in batches: requests with equal settings together, in file
/// order, at most `max_batch_requests` per batch; batches in order of their first request.
[[nodiscard]] std::vector<std::vector<std::size_t>> group_batches(
    const std::vector<batch_entry>& entries);

}  // namespace dynllava::llava
