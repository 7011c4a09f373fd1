// SPDX-License-Identifier: Apache-2.0
/// @file prompt_tokens.hpp
/// @brief A prompt with `<image>` tags -> token ids, and the image rows spliced in.
#pragma once

#include <dynllava/core/config.hpp>

#include "tokenizer.hpp"

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace dynllava::llava {

/// The released LLaVA code's image placeholder id (`IMAGE_TOKEN_INDEX`). Hugging Face
/// `LlavaForConditionalGeneration` checkpoints use a vocabulary id (`image_token_index`).
inline constexpr std::int32_t llava_image_token_id = -200;

/// LLaVA's `tokenizer_image_token`: the prompt is split at `"<image>"`, each piece is tokenised
/// as the Hugging Face slow `LlamaTokenizer` does (with BOS, `"</s>"` and the other special
/// pieces as their ids; each piece starts with the dummy prefix, the text after a special piece
/// only with `tokenizer_options::legacy`), the BOS of every piece
/// but the first is dropped, and `image_token_id` stands between the pieces. So the text after
/// an image starts with "▁" + "\n". Returns BOS first, one `image_token_id` per `"<image>"`.
/// @throws dynllava::error when `image_token_id` is in `[0, vocab_size)` (it would be taken for
///         text).
[[nodiscard]] std::vector<std::int32_t> tokenize_prompt(
    const tokenizer& tok, std::string_view prompt,
    std::int32_t image_token_id = llava_image_token_id);

/// A prompt whose images have their rows: each placeholder repeated once per image row.
struct expanded_prompt {
  std::vector<std::int32_t> ids;  ///< [rows]; image rows hold `image_token_id`
  std::vector<index_t>
      image_begin;  ///< [images]; image `i` is rows [begin, begin + rows_per_image)
  index_t rows_per_image = 0;
};

/// Replaces each `image_token_id` in `ids` by `rows_per_image` copies (576 for LLaVA-1.5) and
/// records where each image's rows start, for the model to write the image features there.
/// @throws dynllava::error when `rows_per_image < 1` or the result exceeds `index_t`.
[[nodiscard]] expanded_prompt expand_images(std::span<const std::int32_t> ids,
                                            std::int32_t image_token_id, index_t rows_per_image);

}  // namespace dynllava::llava
