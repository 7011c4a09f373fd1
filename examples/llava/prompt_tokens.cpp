// SPDX-License-Identifier: Apache-2.0
/// @file prompt_tokens.cpp
/// @brief `tokenize_prompt` and `expand_images`.
#include "prompt_tokens.hpp"

#include <dynllava/core/error.hpp>

#include "conversation.hpp"

#include <limits>

namespace dynllava::llava {

std::vector<std::int32_t> tokenize_prompt(const tokenizer& tok, std::string_view prompt,
                                          std::int32_t image_token_id) {
  DYNLLAVA_EXPECTS(image_token_id < 0 || image_token_id >= tok.vocab_size(),
                   "tokenize_prompt: image_token_id {} is a piece of the vocabulary [0, {}); it "
                   "must be negative (LLaVA: -200) or past the vocabulary (Hugging Face: 32000)",
                   image_token_id, tok.vocab_size());
  std::vector<std::int32_t> ids{tok.bos_id()};
  bool first = true;
  while (true) {
    const auto at = prompt.find(image_tag);
    if (!first) ids.push_back(image_token_id);
    first = false;
    // Each piece is tokenised with BOS by the released code, which then drops that BOS.
    const auto piece = tok.encode_with_special_tokens(prompt.substr(0, at));
    ids.insert(ids.end(), piece.begin(), piece.end());
    if (at == std::string_view::npos) break;
    prompt.remove_prefix(at + image_tag.size());
  }
  return ids;
}

expanded_prompt expand_images(std::span<const std::int32_t> ids, std::int32_t image_token_id,
                              index_t rows_per_image) {
  DYNLLAVA_EXPECTS(rows_per_image >= 1, "expand_images: rows_per_image must be >= 1, got {}",
                   rows_per_image);
  expanded_prompt out;
  out.rows_per_image = rows_per_image;
  std::int64_t rows = 0;
  for (auto id : ids) rows += id == image_token_id ? rows_per_image : 1;
  DYNLLAVA_EXPECTS(rows <= std::numeric_limits<index_t>::max(),
                   "expand_images: {} rows exceed index_t", rows);
  out.ids.reserve(static_cast<std::size_t>(rows));
  for (auto id : ids) {
    if (id != image_token_id) {
      out.ids.push_back(id);
      continue;
    }
    out.image_begin.push_back(static_cast<index_t>(out.ids.size()));
    out.ids.insert(out.ids.end(), static_cast<std::size_t>(rows_per_image), image_token_id);
  }
  return out;
}

}  // namespace dynllava::llava
