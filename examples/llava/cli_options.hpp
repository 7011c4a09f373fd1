// SPDX-License-Identifier: Apache-2.0
/// @file cli_options.hpp
/// @brief The options of `dynllava-llava` (parsed with CLI11) and the generation settings a
/// request runs with (the command line's, or a batch line's).
#pragma once

#include <dynllava/core/config.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace CLI {
class App;
}

namespace dynllava::llava {

/// What prunes the context: the dense model, a baseline, or Dynamic-LLaVA.
enum class run_mode : std::uint8_t {
  dense,          ///< every token kept, full KV cache
  fastv,          ///< FastV: image tokens ranked by attention at layer K = 3, 25% kept
  h2o,            ///< H2O: half of the cache kept by accumulated attention (KV cache only)
  streaming,      ///< StreamingLLM: 4 attention sinks + the newest 252 tokens (KV cache only)
  dynamic_image,  ///< Dynamic-LLaVA, image predictor only
  dynamic,        ///< Dynamic-LLaVA, image predictor and output-text gate
};

/// The mode's name on the command line (`dense`, ..., `dynamic-image`, `dynamic`).
[[nodiscard]] std::string_view to_string(run_mode mode) noexcept;
/// @throws dynllava::error naming `option` and the accepted names for an unknown mode.
[[nodiscard]] run_mode parse_mode(std::string_view text, std::string_view option);
/// `on` / `off` (also `true` / `false`, `1` / `0`). @throws dynllava::error naming `option`.
[[nodiscard]] bool parse_switch(std::string_view text, std::string_view option);
/// @brief Refuses a prompt that spells LLaVA's `<image>` placeholder itself (the program places
/// one per picture). @throws dynllava::error naming `option`.
void check_prompt_text(std::string_view prompt, std::string_view option);
/// A decimal integer in [0, 2^64) (no sign, no exponent). @throws dynllava::error naming `option`.
[[nodiscard]] std::uint64_t parse_seed(std::string_view text, std::string_view option);

/// How one request is generated. Requests of a batch run together when these agree.
struct generation_settings {
  run_mode mode = run_mode::dynamic;
  bool kv_cache = true;
  index_t max_new_tokens = 64;  ///< >= 0
  float temperature = 0.0f;     ///< 0: greedy
  float top_p = 1.0f;           ///< in (0, 1]
  std::uint64_t seed = 0;

  /// @throws dynllava::error naming the option that is out of range, or a mode that needs the
  ///         KV cache without it: the command line's (`where` empty: `--top-p`) or a batch line's
  ///         key (`where` = `--batch FILE:LINE`: `--batch FILE:LINE: "top_p"`).
  void validate(std::string_view where) const;
  friend bool operator==(const generation_settings&, const generation_settings&) = default;
};

/// Everything the command line says.
struct program_options {
  std::filesystem::path model;                        ///< --model (required)
  std::optional<std::filesystem::path> vision_tower;  ///< --vision-tower
  std::vector<std::filesystem::path> images;          ///< --image, in prompt order
  std::optional<std::string> prompt;                  ///< --prompt
  generation_settings settings;
  int threads = 0;                                 ///< --threads; 0: the number of cores
  std::optional<std::filesystem::path> batch;      ///< --batch FILE (JSON lines)
  bool json = false;                               ///< --json
  std::optional<std::filesystem::path> visualize;  ///< --visualize OUT.html
};

/// @brief Declares every option on `app`, writing into `out` and into the strings `mode`,
/// `kv_cache` and `seed` (read by `finish_options`); all must outlive `app`'s parse.
void add_options(CLI::App& app, program_options& out, std::string& mode, std::string& kv_cache,
                 std::string& seed);

/// @brief Reads `mode` and `kv_cache` into `o` and checks what CLI11 does not: value ranges and
/// combinations (`--prompt` without `--batch`, `--batch` with `--prompt`, ...).
/// @throws dynllava::error naming the option and the problem.
void finish_options(program_options& o, std::string_view mode, std::string_view kv_cache,
                    std::string_view seed);

}  // namespace dynllava::llava
