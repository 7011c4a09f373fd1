// SPDX-License-Identifier: Apache-2.0
/// @file request_runner.hpp
/// @brief Runs requests (images + a question) through the library's drivers in one of the
/// program's modes, as one ragged batch, and reports what each sequence kept and what the run
/// cost (`cost::trace` through a `trace_recorder`, and the dense model's schedule for the same
/// prompts and steps).
#pragma once

#include <dynllava/io/load_llava.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/model/prompt_rows.hpp>

#include "cli_options.hpp"
#include "image.hpp"
#include "tokenizer.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava::llava {

/// A model folder loaded with its tokenizer.
struct loaded_model {
  io::llava_folder folder;
  tokenizer tok;
};

/// @brief Checks that `model_dir` looks like a checkpoint folder (a folder with `config.json` and
/// `tokenizer.model`) and that `vision_tower`, when given, is a folder; reads no file.
/// @throws dynllava::error naming `--model` or `--vision-tower` and the problem.
void check_model_folder(const std::filesystem::path& model_dir,
                        const std::optional<std::filesystem::path>& vision_tower);

/// @brief Loads `model_dir` (and its `tokenizer.model`).
/// @throws dynllava::error naming the folder or file and the problem.
[[nodiscard]] loaded_model load_model(const std::filesystem::path& model_dir,
                                      const std::optional<std::filesystem::path>& vision_tower);

/// One question about zero or more images.
struct request {
  std::string prompt;
  std::vector<std::filesystem::path> images;
};

/// A request ready for the model: token ids (one placeholder per image) and pixel values.
struct prepared_request {
  std::vector<std::int64_t> ids;
  std::vector<float> pixels;     ///< [images, 3, S, S]
  std::vector<rgb_image> views;  ///< [images] the 8-bit images the tower saw (S x S)
  std::size_t images = 0;
};

/// @brief Tokenises the vicuna_v1 prompt of `r` and preprocesses its images.
/// @throws dynllava::error naming an image file that cannot be read or decoded.
[[nodiscard]] prepared_request prepare_request(const loaded_model& m, const request& r);

/// @brief Checks that `r`'s prompt (images expanded) and `settings.max_new_tokens` fit the
/// model's positions. `where` names the request: empty for the command line (the messages name
/// `--prompt/--image` and `--max-new-tokens`), else a batch line (`--batch FILE:LINE`).
/// @throws usage_error (exit code 2) naming what does not fit.
void check_fits(const loaded_model& m, const prepared_request& r,
                const generation_settings& settings, std::string_view where);

/// @brief A paged KV cache (pages of 16 rows, host) with room for every row of `prompt` and
/// `new_tokens` generated rows per sequence of a `batch`-sequence run of `m`.
[[nodiscard]] paged_kv_cache kv_cache_for(const llava_model& m, const prompt_rows& prompt,
                                          std::size_t batch, index_t new_tokens);

/// What one sequence of a batch produced and kept.
struct sequence_result {
  std::vector<std::int32_t> tokens;  ///< generated ids, EOS included
  bool stopped_at_eos = false;
  index_t prompt_rows = 0;               ///< rows of the prompt (image tokens expanded)
  std::vector<std::uint8_t> image_keep;  ///< [image tokens of every image] 1 = kept
  /// [decided] whether each generated token's K/V entered the cache (KV mode; without a cache:
  /// whether it stays in the recomputed context), in generation order. The newest generated
  /// token has no decision yet (it was never fed back).
  std::vector<std::uint8_t> output_keep;
  std::vector<float> output_margin;  ///< [decided] the gate's logit0 - logit1; NaN: not gated
};

/// What one run of a batch cost, in the cost model's terms and in seconds.
struct run_cost {
  double flops = 0;                 ///< every driver call of the run (`cost::exact_flops`)
  double dense_flops = 0;           ///< the dense model's schedule on the same prompts and steps
  std::int64_t kv_bytes = 0;        ///< KV cache held after the last call (0 without a cache)
  std::int64_t dense_kv_bytes = 0;  ///< the dense model's KV cache after the same calls
  double encode_s = 0;              ///< embedding the prompts and encoding the images
  double prefill_s = 0;             ///< the prefill and the first token
  double decode_s = 0;              ///< the later tokens
  std::size_t decode_steps = 0;     ///< decode calls the batch made
};

struct batch_result {
  std::vector<sequence_result> sequences;
  run_cost cost;
};

/// Called with (sequence, token id) as soon as a token is chosen.
using token_callback = std::function<void(std::size_t, std::int32_t)>;
/// Called with a short message before a slow step (encoding images).
using progress_callback = std::function<void(const std::string&)>;

/// @brief Runs `batch` as one ragged batch with `settings` through `kv_session` or
/// `no_cache_session`, greedily or sampling (`token_sampler`: the draws depend on the seed and
/// the sequence's index in the batch).
/// @throws dynllava::error when the mode needs predictors the checkpoint lacks, or what the
///         drivers throw.
[[nodiscard]] batch_result run_batch(const loaded_model& m,
                                     const std::vector<prepared_request>& batch,
                                     const generation_settings& settings,
                                     const token_callback& on_token = {},
                                     const progress_callback& progress = {});

}  // namespace dynllava::llava
