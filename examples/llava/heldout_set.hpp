// SPDX-License-Identifier: Apache-2.0
/// @file heldout_set.hpp
/// @brief The held-out questions of a trained tiny model (`<model>/eval/heldout.jsonl`, written
/// by tools/train_tiny_llava.py): one JSON object a line, read and checked field by field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace dynllava::llava {

/// One held-out question about one picture.
struct heldout_item {
  std::size_t line = 0;         ///< 1-based line in the file
  std::string id;               ///< the "id" field as text
  std::filesystem::path image;  ///< resolved against the file's folder
  std::string question;
  std::string answer;
  std::string kind;                        ///< "count", "exists", ...
  std::vector<std::int64_t> prompt_ids;    ///< vicuna_v1 prompt, one image placeholder
  std::vector<std::int32_t> answer_ids;    ///< the expected generated ids (EOS included)
  std::vector<std::uint8_t> object_patch;  ///< [grid * grid] row-major, 1 = touches an object
};

/// @brief Reads `file`: at most `limit` questions (0: all), each with a `grid` x `grid` patch
/// map. Required fields: "image", "question", "kind" (strings), "prompt_ids" (integers, exactly
/// one `image_token`), "answer_ids" (1 to 64 ids in [0, vocab)), "object_patches" (`grid`
/// strings of `grid` '0'/'1'); "id" and "answer" are optional, other fields are ignored.
/// @throws dynllava::error naming `FILE:LINE` and the field for a line that breaks these rules,
///         an empty file, or a file that cannot be read.
[[nodiscard]] std::vector<heldout_item> read_heldout(const std::filesystem::path& file,
                                                     std::size_t limit, int grid,
                                                     std::int64_t image_token, std::int64_t vocab);

}  // namespace dynllava::llava
