// SPDX-License-Identifier: Apache-2.0
/// @file utf8.hpp
/// @brief UTF-8 as SentencePiece's decoder judges it (shared by the tokenizer and the stream).
#pragma once

#include <string_view>

namespace dynllava::llava::detail {

enum class utf8_verdict { valid, invalid, incomplete };

/// SentencePiece's `IsValidDecodeUTF8` at the start of `s` (non-empty): `valid` with the
/// character's length in `len` (1-4; no overlongs, surrogates or code points past U+10FFFF; a
/// literal U+FFFD is valid), `incomplete` when `s` is a proper prefix of some valid character,
/// `invalid` otherwise (SentencePiece then consumes one byte as U+FFFD).
utf8_verdict classify_utf8(std::string_view s, int& len);

/// Whether all of `s` is valid UTF-8 in the sense above.
bool is_valid_utf8(std::string_view s);

}  // namespace dynllava::llava::detail
